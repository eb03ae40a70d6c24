"""A float32 copy of a quantised GGUF file: the same model, metadata and tokenizer, every tensor
dequantised, so llama.cpp can be compared with our fp32 forward on equal bytes.

Why: the embedded SmolLM2 ships as Q4_1 (4.5 bits a weight), and llama.cpp on it reads 7x fewer
weight bytes per token than our fp32 forward, which makes its tokens/s a different experiment. The
copy is written with the `gguf` package (its own dequantisers, its own writer) into specjax's cache
(`models.derived_cache`, kind "gguf-f32"), once per source file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models import derived_cache
from models.errors import SpecjaxError

KIND = "gguf-f32"
FILE = "model-f32.gguf"


def _write_f32_copy(source: Path, out: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(str(source))
    arch = reader.get_field("general.architecture")
    if arch is None:
        raise SpecjaxError(f"{source}: GGUF metadata lacks general.architecture")
    writer = gguf.GGUFWriter(str(out), arch=arch.contents())
    for field in reader.fields.values():
        # The writer adds the architecture itself; the GGUF.* entries are the header, not metadata.
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        if field.name == "general.file_type":
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for t in reader.tensors:
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            data = np.asarray(t.data, np.float32)
        else:
            data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # ggml dims -> numpy order
        writer.add_tensor(t.name, data.reshape(shape), raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def f32_gguf(source: str | Path) -> Path:
    """The float32 copy of the GGUF file `source`, written on first use and cached."""
    source = Path(source)
    entry = derived_cache.lookup(KIND, source)
    if entry is None:
        entry = derived_cache.store(KIND, source, lambda tmp: _write_f32_copy(source, tmp / FILE))
    if entry is None:
        raise SpecjaxError(f"cannot write the float32 copy of {source} (cache not writable)")
    return entry / FILE
