"""Static candidate trees for heads that draft every depth at once (Medusa; the CTC drafter).

A tree is a list of paths: the path (r_1, ..., r_d) is the node at depth d whose token is the
r_d-th best guess of head d - 1, under the node (r_1, ..., r_{d-1}). Medusa's `mc_sim_7b_63` (63
nodes, depth 4, top-10 per depth) is the reference for TPU/GPU. `build_tree` makes the tree for
the machine at hand: nodes are added greedily by the probability that their whole path is right
(measured top-k accuracies, assumed independent across depths, as Medusa's paper does), and the
size kept is the one with the most expected tokens per unit of verify cost c(T).

Trees are stored as JSON, `{"paths": [[0], [0, 0], [1], ...]}`, next to the heads.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from models.errors import SpecjaxError
from specjax.candidates import ROOT_PARENT

# Medusa's `mc_sim_7b_63` (medusa/model/medusa_choices.py): 63 paths, depth 4, ranks < 10.
MC_SIM_7B_63 = (
    (0,), (0, 0), (1,), (0, 1), (2,), (0, 0, 0), (1, 0), (0, 2), (3,), (0, 3), (4,), (0, 4),
    (2, 0), (0, 5), (0, 0, 1), (5,), (0, 6), (6,), (0, 7), (0, 1, 0), (1, 1), (7,), (0, 8),
    (0, 0, 2), (3, 0), (0, 9), (8,), (9,), (1, 0, 0), (0, 2, 0), (1, 2), (0, 0, 3), (4, 0),
    (2, 1), (0, 0, 4), (0, 0, 5), (0, 0, 0, 0), (0, 1, 1), (0, 0, 6), (0, 3, 0), (5, 0), (1, 3),
    (0, 0, 7), (0, 0, 8), (0, 0, 9), (6, 0), (0, 4, 0), (1, 4), (7, 0), (0, 1, 2), (2, 0, 0),
    (3, 1), (2, 2), (8, 0), (0, 5, 0), (1, 5), (1, 0, 1), (0, 2, 1), (9, 0), (0, 6, 0),
    (0, 0, 0, 1), (1, 6), (0, 7, 0),
)  # fmt: skip
NAMED_TREES = {"mc_sim_7b_63": MC_SIM_7B_63}


@dataclasses.dataclass(frozen=True)
class StaticTree:
    """A tree as the engine's block wants it: node 0 is the root, then the paths sorted by depth
    and rank (parents first, better-ranked siblings first).

    paths: the paths in node order (node i + 1 is paths[i]).
    parent, depth, rank: int [T] per node (root: ROOT_PARENT, 0, 0); rank is the path's last
      entry, the head's guess the node's token is.
    """

    paths: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        return 1 + len(self.paths)

    @property
    def max_depth(self) -> int:
        return max((len(p) for p in self.paths), default=0)

    @property
    def max_rank(self) -> int:
        return max((p[-1] for p in self.paths), default=0)

    @property
    def parent(self) -> np.ndarray:
        index = {p: i + 1 for i, p in enumerate(self.paths)}
        return np.array(
            [ROOT_PARENT] + [index.get(p[:-1], 0) for p in self.paths], np.int32
        )  # a depth-1 path's parent () is the root

    @property
    def depth(self) -> np.ndarray:
        return np.array([0] + [len(p) for p in self.paths], np.int32)

    @property
    def rank(self) -> np.ndarray:
        return np.array([0] + [p[-1] for p in self.paths], np.int32)


def tree_from_paths(
    paths: Sequence[Sequence[int]], max_depth: int | None = None, max_size: int | None = None
) -> StaticTree:
    """The tree of `paths`, checked: every path's parent is in the tree, no path repeats, ranks
    are >= 0, and depth and size (nodes + root) stay within the given limits."""
    clean = []
    for p in paths:
        if not isinstance(p, (list, tuple)) or not p or not all(isinstance(r, int) for r in p):
            raise SpecjaxError(f"tree path {p!r} is not a non-empty list of integers")
        if min(p) < 0:
            raise SpecjaxError(f"tree path {list(p)} has a negative rank")
        clean.append(tuple(p))
    seen = set(clean)
    if len(seen) != len(clean):
        raise SpecjaxError("a tree path appears twice")
    for p in clean:
        if len(p) > 1 and p[:-1] not in seen:
            raise SpecjaxError(f"tree path {list(p)} has no parent {list(p[:-1])} in the tree")
    tree = StaticTree(tuple(sorted(clean, key=lambda p: (len(p), p))))
    if max_depth is not None and tree.max_depth > max_depth:
        raise SpecjaxError(
            f"the tree is {tree.max_depth} deep, but the heads draft only {max_depth} tokens"
        )
    if max_size is not None and tree.size > max_size:
        raise SpecjaxError(f"the tree has {tree.size} nodes with its root, above {max_size}")
    return tree


def load_tree(spec: str, max_depth: int | None = None, max_size: int | None = None) -> StaticTree:
    """A named tree ("mc_sim_7b_63") or a JSON file {"paths": [...]}, checked (`tree_from_paths`)."""
    if spec in NAMED_TREES:
        return tree_from_paths(NAMED_TREES[spec], max_depth, max_size)
    path = Path(spec)
    if not path.is_file():
        names = ", ".join(NAMED_TREES)
        raise SpecjaxError(f"tree {spec!r} is neither a tree file nor a named tree ({names})")
    try:
        paths = json.loads(path.read_text())["paths"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise SpecjaxError(f"{spec} is not a tree file ({{'paths': [...]}}): {e}") from None
    if not isinstance(paths, list):
        raise SpecjaxError(f"{spec}: 'paths' must be a list of paths")
    return tree_from_paths(paths, max_depth, max_size)


def save_tree(path: str | Path, tree: StaticTree, extra: dict | None = None) -> Path:
    path = Path(path)
    path.write_text(json.dumps({"paths": [list(p) for p in tree.paths], **(extra or {})}))
    return path


def expected_accepted(tree: StaticTree, accuracy: np.ndarray) -> float:
    """Expected draft tokens a greedy verify accepts from `tree`, when head d's rank-r guess is
    right with probability accuracy[d, r], independently across depths: the sum over nodes of
    the product of accuracies along the node's path (at most one sibling is right)."""
    total = 0.0
    for p in tree.paths:
        total += float(np.prod([accuracy[d, r] for d, r in enumerate(p)]))
    return total


def build_tree(
    accuracy: np.ndarray,
    cost: Callable[[int], float],
    max_size: int,
    depth_cost: Callable[[int], float] | None = None,
) -> tuple[StaticTree, float]:
    """(tree, expected tau / cost) of the best greedy tree of at most `max_size` nodes.

    accuracy[d, r]: measured probability that head d's rank-r token is the target's (top-k
    accuracies on held-out data, `accuracy.shape` = (depths, ranks)). cost(T): the verify cost of
    a T-slot block relative to one token, c(T) (`specjax.verify_cost`). depth_cost(d): what
    drafting a tree d deep adds, in the same unit (a drafter that runs once per depth, as the
    CTC module does; None: nothing). Each addition is the unused child, of the root or of a node
    in the tree, whose path is likeliest; the tree returned is the prefix of that order with the
    highest (1 + expected accepted) / (c(T) + depth_cost(depth)). With a depth cost the order is
    built once per depth limit (a deep node must not crowd out shallow ones it costs more than).
    """
    depths = accuracy.shape[0]
    if depth_cost is None:
        return _greedy_tree(accuracy, cost, max_size, depths, lambda d: 0.0)
    trees = [_greedy_tree(accuracy, cost, max_size, d, depth_cost) for d in range(1, depths + 1)]
    return max(trees, key=lambda t: t[1])


def _greedy_tree(accuracy, cost, max_size: int, max_depth: int, depth_cost):
    """`build_tree` over paths at most `max_depth` deep."""
    ranks = accuracy.shape[1]
    chosen: list[tuple[int, ...]] = []
    frontier = {(r,): float(accuracy[0, r]) for r in range(ranks)}
    best, best_score, expected = StaticTree(()), 1.0 / cost(1), 0.0
    while frontier and len(chosen) + 1 < max_size:
        path = max(frontier, key=lambda p: (frontier[p], [-x for x in p]))
        p_path = frontier.pop(path)
        chosen.append(path)
        expected += p_path
        if len(path) < max_depth:
            for r in range(ranks):
                frontier[path + (r,)] = p_path * float(accuracy[len(path), r])
        depth = max(len(p) for p in chosen)
        score = (1.0 + expected) / (cost(1 + len(chosen)) + depth_cost(depth))
        if score > best_score:
            best, best_score = tree_from_paths(chosen), score
    return best, best_score


# Block sizes whose verify cost is measured for `auto_tree` (interpolated between them).
AUTO_COST_SIZES = (1, 2, 4, 8, 16, 32, 64)
AUTO_MAX_SIZE = 64


def interpolated_cost(ms_by_T: dict[int, float]) -> Callable[[int], float]:
    """c(T) = ms(T) / ms(1), linear between the measured sizes (flat past the largest)."""
    Ts = sorted(ms_by_T)
    ms = [ms_by_T[T] for T in Ts]
    return lambda T: float(np.interp(T, Ts, ms)) / ms_by_T[1]


def auto_tree(
    config,
    params,
    head_dir: Path,
    num_heads: int,
    remeasure: bool = False,
    depth_ms: Callable[[int], float] | None = None,
    extra_slots: int = 0,
):
    """The tree for these heads on this machine: `build_tree` over the held-out rank accuracies
    saved with the heads and the target's verify cost measured here (cached,
    `specjax.verify_cost`), plus `depth_ms(d)`, the drafter's own ms for a tree d deep where it
    drafts depth by depth. Where the measured cost says no tree pays (a slow or busy machine),
    it keeps one node, the first head's top guess: the method still drafts, as asked, at the
    least cost.

    `extra_slots`: a prompt-lookup branch's K (`--lookup`), which shares the block and takes
    slots from the tree where it matches. The block is grown by K beyond what the heads alone
    pay for, and filled with the heads' next likeliest nodes (no deeper than the tree chosen
    where each depth costs drafting time), which keep those slots where lookup finds nothing:
    on the bench's prompts here that measured faster than either the heads' own size or a
    chain squeezed into it (README Performance)."""
    import logging

    from specjax.verify_cost import cached_cost_curve

    accuracy = rank_accuracy(head_dir, num_heads)
    curve = cached_cost_curve(config, params, AUTO_COST_SIZES, remeasure=remeasure)
    one = curve["ms"][1]
    depth_cost = None if depth_ms is None else (lambda d: depth_ms(d) / one)
    tree, score = build_tree(accuracy, interpolated_cost(curve["ms"]), AUTO_MAX_SIZE, depth_cost)
    if tree.size == 1:
        logging.warning(
            "--tree=auto: at this machine's measured verify cost no tree beats vanilla; "
            "drafting one node (the first head's top guess)"
        )
        tree = tree_from_paths([(0,)])
    else:
        logging.info("auto tree: %d nodes, expected tau / c(T) %.2f", tree.size, score)
    if extra_slots:
        depth = accuracy.shape[0] if depth_ms is None else tree.max_depth  # deeper costs more
        grown, _ = _greedy_tree(
            accuracy, lambda T: 1.0, tree.size + extra_slots, depth, lambda d: 0.0
        )
        tree = grown if grown.size > tree.size else tree
    return tree


def rank_accuracy(head_dir: Path, num_heads: int, required: bool = True) -> np.ndarray | None:
    """float64 [depths, ranks]: the held-out rank accuracies saved with the heads (the first
    `num_heads` depths); a head without them is one SpecjaxError line, or None if not `required`."""
    from models.head_file import CONFIG_FILE

    try:
        accuracy = json.loads((Path(head_dir) / CONFIG_FILE).read_text())["extra"]["rank_accuracy"]
        return np.asarray(accuracy, np.float64)[:num_heads]
    except (OSError, ValueError, KeyError, TypeError):
        if not required:
            return None
        raise SpecjaxError(
            f"head {head_dir} records no rank accuracies for --tree=auto; pass "
            "--tree=mc_sim_7b_63 or a tree file"
        ) from None
