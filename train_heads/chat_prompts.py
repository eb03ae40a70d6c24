"""Chat-style training prompts composed from word lists written for this project.

The CPython-doc prompts (`train_heads.prompts`) taught the first shipped draft one register only:
measured on Spec-Bench answers its teacher-forced top-1 agreement fell from 0.6-0.7 (on its own
templates) to 0.06-0.13. A drafter has to predict the target's *answers*, and those change with the
kind of request, so this module covers the request kinds chat traffic has (the eight MT-Bench kinds
plus translation, summarisation and question answering) with topics, roles, tasks and numbers listed
here. Nothing is taken from a benchmark: every prompt is a template of this file filled with words of
this file (or, for summarise/translate, with CPython's own documentation), and a test checks that no
Spec-Bench or HumanEval question appears in or contains one of them.

`chat_pool(seed)` is deterministic: word lists are fixed, numbers come from a seeded generator.
"""

from __future__ import annotations

import random

TOPICS = (
    "a rainy afternoon in a small town",
    "the first day at a new job",
    "learning to cook",
    "a lighthouse keeper",
    "city gardens on rooftops",
    "an old bicycle",
    "moving to a new country",
    "the ocean at night",
    "a library that never closes",
    "winter in the mountains",
    "a friendship that began online",
    "the smell of fresh bread",
    "a forgotten train station",
    "volunteering at an animal shelter",
    "a marathon runner's last mile",
    "a family recipe",
    "the invention of the printing press",
    "a robot that learns to paint",
    "a desert road trip",
    "the sound of a violin",
    "a small bookshop",
    "camping under the stars",
    "a lost wallet",
    "the first snow of the year",
    "a chess tournament",
    "working from home",
    "a street market",
    "an astronaut's view of Earth",
    "a grandmother's garden",
    "a power outage in the city",
    "a ship in a storm",
    "learning a musical instrument as an adult",
    "a village festival",
    "the last bus home",
    "a honeybee colony",
    "an abandoned amusement park",
    "a picnic by a lake",
    "the history of tea",
    "a night shift at a hospital",
    "a childhood hero",
    "a broken umbrella",
    "a museum after closing time",
    "planting a tree",
    "a long-distance phone call",
    "a kitchen on a busy evening",
    "a mountain village without internet",
    "the morning commute",
    "a surprise birthday party",
    "a fisherman at dawn",
    "an inventor's failed experiment",
    "the end of summer holidays",
    "a letter found in an old book",
    "a crowded train",
    "a stray cat that adopts a family",
    "the first day of school",
    "a jazz club",
    "a small island community",
    "a talking parrot",
    "a flooded river",
    "a solar eclipse",
)
FORMS = (
    "a short poem",
    "a blog post",
    "a persuasive paragraph",
    "a short story",
    "a diary entry",
    "a speech for a school assembly",
    "a product description",
    "a letter to a friend",
    "a news report",
    "a limerick",
    "a dialogue between two people",
    "the opening paragraph of a novel",
    "a motivational message",
    "a short essay",
    "a social media post",
    "a haiku",
    "a review",
)
WRITING_TEMPLATES = (
    "Write {form} about {topic}.",
    "Compose {form} about {topic}. Keep it under 200 words.",
    "Could you write {form} about {topic}? Make it vivid.",
    "Write {form} about {topic} in a humorous tone.",
    "Draft {form} about {topic} for a general audience.",
)
EMAIL_TEMPLATES = (
    "Write an email to {recipient} asking to {request}.",
    "Draft a polite message to {recipient} to {request}.",
)
RECIPIENTS = (
    "my manager",
    "a landlord",
    "a customer",
    "my professor",
    "a hotel",
    "a neighbour",
    "the city council",
    "a supplier",
    "my team",
    "a conference organiser",
    "a former colleague",
)
REQUESTS = (
    "reschedule a meeting to next week",
    "ask for a deadline extension",
    "complain about a noise problem",
    "request a refund for a late delivery",
    "propose a new project idea",
    "ask for a reference letter",
    "invite them to a product launch",
    "apologise for a billing error",
    "request time off in May",
    "ask about the status of an order",
    "thank them for their help last month",
)
ROLES = (
    "a pirate captain",
    "a medieval knight",
    "a detective in 1920s London",
    "a chef in Paris",
    "a tour guide in Rome",
    "a fitness coach",
    "a wise old wizard",
    "a spaceship engineer",
    "a kindergarten teacher",
    "a travel agent",
    "a museum curator",
    "a football commentator",
    "a career counsellor",
    "a customer support agent",
    "a marine biologist",
    "a fairy-tale dragon",
    "a radio host",
    "a park ranger",
    "a startup founder pitching to investors",
    "a librarian",
    "a time traveller from the year 3000",
    "a tailor",
    "a mountain guide",
    "a news anchor",
)
ROLE_ASKS = (
    "Describe a typical day in your life.",
    "What advice would you give a beginner?",
    "Tell me about the hardest moment of your career.",
    "Introduce yourself to a new visitor.",
    "What do you think about modern smartphones?",
    "Explain your job to a ten-year-old.",
    "Convince me to join your next adventure.",
    "What is your favourite tool and why?",
)
ROLEPLAY_TEMPLATES = (
    "Pretend you are {role}. {ask}",
    "Act as {role} and stay in character. {ask}",
    "You are {role}. {ask}",
)
CONCEPTS = (
    "photosynthesis",
    "inflation",
    "the water cycle",
    "plate tectonics",
    "black holes",
    "the immune system",
    "supply and demand",
    "machine learning",
    "compound interest",
    "the greenhouse effect",
    "DNA replication",
    "electric circuits",
    "the theory of evolution",
    "vaccines",
    "the stock market",
    "renewable energy",
    "gravity",
    "the Pythagorean theorem",
    "blockchain",
    "the Doppler effect",
    "entropy",
    "antibiotic resistance",
    "the Roman Empire",
    "the Industrial Revolution",
    "democracy",
    "the scientific method",
    "opportunity cost",
    "climate change",
    "the Internet",
    "nuclear fission",
    "the human heart",
    "sleep",
    "the French Revolution",
    "public key cryptography",
    "magnetism",
    "ocean tides",
    "probability",
    "the Renaissance",
    "neurons",
    "earthquakes",
    "interest rates",
    "recycling",
    "the solar system",
    "the printing press",
    "quantum computing",
    "volcanoes",
    "the placebo effect",
    "globalisation",
    "the Cold War",
    "osmosis",
    "compilers",
    "the Silk Road",
    "behavioural economics",
    "satellites",
    "the nitrogen cycle",
)
EXPLAIN_TEMPLATES = (
    "Explain {concept} in simple terms.",
    "What is {concept}? Give an everyday example.",
    "Describe how {concept} works, step by step.",
    "Why is {concept} important? Answer in a short paragraph.",
    "Explain {concept} to a twelve-year-old.",
    "What are common misconceptions about {concept}?",
    "Give three interesting facts about {concept}.",
    "Compare {concept} with {other} and explain the main differences.",
)
ADVICE = (
    "How can I improve my sleep?",
    "What are good ways to save money each month?",
    "How do I prepare for a job interview?",
    "How can I learn a new language faster?",
    "What should I pack for a week-long hiking trip?",
    "How do I start running as a beginner?",
    "How can I be more productive when working from home?",
    "How do I make friends in a new city?",
    "What are healthy breakfast ideas?",
    "How can I reduce stress before exams?",
    "How should I plan a budget trip to Japan?",
    "How do I care for indoor plants?",
    "How can I become a better public speaker?",
    "What should I consider when buying a used car?",
    "How do I write a good cover letter?",
    "How can I keep my kids busy on a rainy day?",
    "How do I start a small vegetable garden?",
    "What makes a good team leader?",
    "How can I drink more water during the day?",
    "How do I organise a small wedding?",
)
ADVICE_SUFFIXES = ("", " Give me five tips.", " Please be concise.", " Explain your reasoning.")
CODING_TASKS = (
    "reverses a string",
    "checks whether a number is prime",
    "counts the vowels in a sentence",
    "returns the n-th Fibonacci number",
    "merges two sorted lists",
    "removes duplicates from a list while keeping the order",
    "finds the most common word in a text",
    "converts Celsius to Fahrenheit",
    "checks whether a string is a palindrome",
    "flattens a nested list",
    "computes the factorial of a number",
    "sorts a list of dictionaries by a key",
    "finds the second largest number in a list",
    "validates an email address",
    "counts the lines in a file",
    "computes the greatest common divisor of two numbers",
    "groups words by their first letter",
    "rotates a list by k positions",
    "checks whether two strings are anagrams",
    "returns all the permutations of a string",
    "converts a Roman numeral to an integer",
    "finds the longest word in a sentence",
    "implements binary search",
    "computes the running average of a list",
    "transposes a matrix",
    "parses a date string into year, month and day",
    "implements a simple stack class",
    "reads a CSV file and sums one column",
    "capitalises the first letter of every word",
    "computes the median of a list",
)
LANGUAGES = ("Python", "Python", "Python", "JavaScript", "C++", "Java", "Rust", "Go")
CODING_TEMPLATES = (
    "Write a {lang} function that {task}.",
    "Implement a {lang} function that {task}, and explain how it works.",
    "Write {lang} code that {task}. Include a short test.",
    "How would you write a {lang} function that {task}? Keep it efficient.",
)
SQL_TASKS = (
    "the ten customers with the highest total orders",
    "employees hired in the last year",
    "the average salary per department",
    "products that were never ordered",
    "the number of orders per month",
    "duplicate email addresses in a users table",
)
NAMES = (
    "Alice",
    "Ben",
    "Carla",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
)
ITEMS = (
    ("apples", 2),
    ("notebooks", 3),
    ("pencils", 1),
    ("cupcakes", 4),
    ("tickets", 12),
    ("books", 15),
    ("shirts", 20),
    ("plants", 8),
    ("mugs", 6),
    ("candles", 5),
)
LANGS_TO = ("French", "Spanish", "German", "Italian", "Portuguese", "Chinese", "Japanese")
COMPARE = (
    ("cats", "dogs as pets"),
    ("trains", "planes for travel in Europe"),
    ("tea", "coffee"),
    ("renting", "buying a home"),
    ("e-books", "printed books"),
    ("city life", "country life"),
    ("electric cars", "petrol cars"),
    ("studying alone", "studying in a group"),
    ("Python", "JavaScript for beginners"),
    ("summer", "winter holidays"),
)
HUMANITIES = (
    "What were the main causes of the First World War?",
    "Why did the Roman Empire fall?",
    "How did the printing press change European society?",
    "What is the role of art in society?",
    "Discuss the pros and cons of social media for teenagers.",
    "What can we learn from ancient Greek philosophy today?",
    "How has the Internet changed the way we read?",
    "Discuss whether homework should be banned in primary schools.",
    "What makes a novel a classic?",
    "How do festivals help preserve culture?",
    "Is it ethical to keep animals in zoos?",
    "Should voting be mandatory? Discuss both sides.",
    "How did the Silk Road shape trade?",
    "What is the importance of learning history?",
    "Discuss the impact of tourism on small towns.",
)


def _math(rng: random.Random) -> str:
    """One arithmetic or algebra word problem with seeded numbers."""
    kind = rng.randrange(7)
    name, other = rng.sample(NAMES, 2)
    item, price = rng.choice(ITEMS)
    a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(41, 400)
    if kind == 0:
        n = rng.randint(2, 9)
        return (
            f"{name} buys {n} {item} at ${price} each and pays with a ${price * n + b} bill. "
            f"How much change does {name} get?"
        )
    if kind == 1:
        return f"Solve for x: {a}x + {b} = {a * rng.randint(1, 12) + b}. Show your steps."
    if kind == 2:
        return f"What is {rng.choice((5, 10, 15, 20, 25, 40))}% of {c}? Explain."
    if kind == 3:
        return f"A rectangle is {a} cm long and {b} cm wide. What are its area and perimeter?"
    if kind == 4:
        return (
            f"{name} has {c} marbles and gives {other} {a} of them, then buys {b} more. "
            f"How many marbles does {name} have now?"
        )
    if kind == 5:
        return (
            f"A train travels {c} km in {rng.randint(2, 6)} hours. What is its average speed? "
            f"How far does it go in {rng.randint(7, 10)} hours at that speed?"
        )
    return (
        f"If a number is multiplied by {a} and then {b} is added, the result is "
        f"{a * rng.randint(2, 20) + b}. What is the number?"
    )


def _reasoning(rng: random.Random) -> str:
    """A small logic or sequence puzzle with seeded names and numbers."""
    kind = rng.randrange(4)
    x, y, z = rng.sample(NAMES, 3)
    if kind == 0:
        return (
            f"{x} is older than {y}, and {y} is older than {z}. Who is the youngest? "
            f"Explain your reasoning."
        )
    if kind == 1:
        start, step = rng.randint(1, 9), rng.randint(2, 4)
        seq = [start * step**i for i in range(4)]
        return f"What number comes next in the sequence {', '.join(map(str, seq))}? Why?"
    if kind == 2:
        n = rng.randint(3, 7)
        return (
            f"There are {n} people in a room and each shakes hands with every other person once. "
            f"How many handshakes are there?"
        )
    a = rng.randint(2, 6)
    return (
        f"{x} can paint a fence in {a} hours and {y} can paint it in {a + rng.randint(1, 4)} hours. "
        f"How long does it take them working together?"
    )


def _extraction(rng: random.Random) -> str:
    """A made-up passage with names, places and numbers, and a request to pull them out."""
    people = rng.sample(NAMES, 3)
    cities = rng.sample(("Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Toronto", "Krakow"), 2)
    year = rng.randint(1990, 2022)
    text = (
        f"In {year}, {people[0]} and {people[1]} opened a small bakery in {cities[0]}. "
        f"Three years later they hired {people[2]}, who had trained in {cities[1]}, and sales "
        f"grew to {rng.randint(200, 900)} loaves a day."
    )
    ask = rng.choice(
        (
            "Extract every person, place and year mentioned in the text below, as JSON.",
            "List the names and the cities in the following text.",
            "From the passage below, extract all the numbers and say what each one refers to.",
        )
    )
    return f"{ask}\n\n{text}"


def chat_pool(seed: int = 0, per_kind: int = 200) -> list[str]:
    """Deduplicated, sorted chat prompts of every kind (numbers seeded by `seed`)."""
    rng = random.Random(seed)
    pool: set[str] = set()
    for i, topic in enumerate(TOPICS):
        for j in range(3):
            form = FORMS[(i * 3 + j) % len(FORMS)]
            pool.add(
                WRITING_TEMPLATES[(i + j) % len(WRITING_TEMPLATES)].format(form=form, topic=topic)
            )
    for i, recipient in enumerate(RECIPIENTS):
        for j, request in enumerate(REQUESTS):
            pool.add(EMAIL_TEMPLATES[(i + j) % 2].format(recipient=recipient, request=request))
    for i, role in enumerate(ROLES):
        for j in range(4):
            ask = ROLE_ASKS[(i + j * 2) % len(ROLE_ASKS)]
            pool.add(
                ROLEPLAY_TEMPLATES[(i + j) % len(ROLEPLAY_TEMPLATES)].format(role=role, ask=ask)
            )
    for i, concept in enumerate(CONCEPTS):
        for j in range(4):
            other = CONCEPTS[(i + 7 * (j + 1)) % len(CONCEPTS)]
            template = EXPLAIN_TEMPLATES[(i + j * 3) % len(EXPLAIN_TEMPLATES)]
            pool.add(template.format(concept=concept, other=other))
    for i, question in enumerate(ADVICE):
        for j in range(2):
            pool.add(question + ADVICE_SUFFIXES[(i + j) % len(ADVICE_SUFFIXES)])
    for a, b in COMPARE:
        pool.add(f"Compare {a} and {b}. Which would you recommend, and why?")
    for i, task in enumerate(CODING_TASKS):
        for j in range(3):
            lang = LANGUAGES[(i + j) % len(LANGUAGES)]
            pool.add(CODING_TEMPLATES[(i + j) % len(CODING_TEMPLATES)].format(lang=lang, task=task))
    pool.update(f"Write an SQL query that finds {t}." for t in SQL_TASKS)
    pool.update(HUMANITIES)
    for _ in range(per_kind):
        pool.add(_math(rng))
    for _ in range(per_kind // 2):
        pool.add(_reasoning(rng))
        pool.add(_extraction(rng))
    return sorted(pool)


def translation_prompts(sentences: list[str], seed: int = 0) -> list[str]:
    """Translate requests for the given sentences (from CPython's docs), target language seeded."""
    rng = random.Random(seed)
    return [f"Translate into {rng.choice(LANGS_TO)}: {s}" for s in sentences]
