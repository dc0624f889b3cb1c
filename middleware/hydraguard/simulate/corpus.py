"""Benign prompt material: topics, each with subjects, slot fillers and its own templates,
plus generic templates that fit any topic. About 18 topics x (25 generic + 5 own)
templates, each with many fillers, so an ordinary user rarely repeats a template.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Topic:
    things: tuple[str, ...]
    templates: tuple[str, ...] = ()
    slots: dict[str, tuple[str, ...]] = field(default_factory=dict)


GENERIC = (
    "What is {thing}?",
    "Can you explain {thing} to {audience}?",
    "Give me {n} tips for {thing}.",
    "What are the pros and cons of {thing}?",
    "I'm confused about {thing}. Where should I start?",
    "Summarize the key ideas of {thing} in {n} bullet points.",
    "What are common mistakes people make with {thing}?",
    "How do I get better at {thing}?",
    "Write a short paragraph about {thing} for {audience}.",
    "Compare {thing} and {thing2}.",
    "Is {thing} worth learning about in 2025?",
    "What's the history behind {thing}?",
    "Recommend some resources to learn about {thing}.",
    "Explain {thing} like I'm five.",
    "What questions should I ask an expert about {thing}?",
    "Make a {n}-day plan to learn {thing}.",
    "Give me a quick overview of {thing}, no more than {n} sentences.",
    "What's a good analogy for {thing}?",
    "Quiz me on {thing} with {n} questions.",
    "Correct me if I'm wrong: {thing} is closely related to {thing2}, right?",
    "What's the difference between {thing} and {thing2} in practice?",
    "Draft an outline for a blog post about {thing}.",
    "Why do people disagree about {thing}?",
    "Walk me through {thing} step by step.",
    "Tell me something surprising about {thing}.",
)

AUDIENCES = (
    "a beginner", "my manager", "a 10-year-old", "my grandmother", "a software engineer",
    "a high school student", "a busy executive", "my team", "a non-native speaker",
)  # fmt: skip

OPENERS = ("", "", "", "", "Hey, ", "Quick question: ", "Hi! ", "I need help. ", "So, ", "Hello. ")
CLOSERS = (
    "", "", "", "", " Thanks!", " Keep it short.", " Please be detailed.", " Thanks in advance.",
    " Use simple language.", " Give examples.", " Bullet points please.",
)  # fmt: skip

FOLLOW_UPS = (
    "Can you make that shorter?", "Thanks. Can you give an example?", "Why is that?",
    "What about the second point?", "Can you rewrite it in a friendlier tone?",
    "Ok, and what if it doesn't work?", "Explain that last part again, please.",
    "Great, now put it in a table.", "Is there a simpler way?", "Are you sure about that?",
    "Translate that into Spanish.", "Give me three alternatives.",
)  # fmt: skip

DOC_SENTENCES = (
    "The quarterly review showed that {thing} remains our main focus for the next period.",
    "Several customers reported issues related to {thing} during the last release.",
    "According to the meeting notes, the team agreed to revisit {thing} in {n} weeks.",
    "Our analysis indicates that costs associated with {thing} increased by {n} percent.",
    "The draft proposal outlines how {thing} could be improved with limited resources.",
    "Stakeholders asked for a clearer explanation of {thing} before signing off.",
    "The previous approach to {thing} did not scale beyond {n} users.",
    "In the appendix you will find the detailed timeline for {thing}.",
    "Feedback from the pilot group about {thing} was mostly positive.",
    "We still need a decision on the budget for {thing} by the end of the month.",
)

_LANGS = ("Python", "JavaScript", "TypeScript", "Go", "Rust", "Java", "C#", "SQL", "Bash")

# fmt: off
TOPICS: dict[str, Topic] = {
    "programming": Topic(
        ("recursion", "async/await", "dependency injection", "unit testing", "regular expressions",
         "hash maps", "garbage collection", "REST APIs", "database indexes", "git rebase",
         "Docker volumes", "memory leaks", "type hints", "race conditions"),
        ("Why does my {lang} code throw '{error}' when I {action}?",
         "Write a {lang} function that {task}.",
         "How do I {action} in {lang}?",
         "Review this {lang} code for bugs:\n\n{code}",
         "What's the idiomatic way to {task} in {lang}?"),
        {"lang": _LANGS,
         "error": ("KeyError", "NullPointerException", "index out of range", "undefined is not a "
                   "function", "connection refused", "permission denied", "stack overflow"),
         "action": ("read a large CSV file", "parse JSON from an API", "sort a list of objects",
                    "run tasks in parallel", "connect to Postgres", "deploy to a container",
                    "handle timeouts", "mock an HTTP call in tests"),
         "task": ("removes duplicates from a list", "validates an email address",
                  "merges two sorted arrays", "retries a request with backoff",
                  "flattens a nested dictionary", "counts word frequencies in a file",
                  "converts a date string to ISO format"),
         "code": ("def total(xs):\n    t = 0\n    for x in xs:\n        t =+ x\n    return t",
                  "for (let i = 0; i <= arr.length; i++) { sum += arr[i]; }",
                  "SELECT name, COUNT(*) FROM users GROUP BY id;",
                  "if err != nil { log.Println(err) }\nreturn result, nil")}),
    "cooking": Topic(
        ("sourdough bread", "meal prep", "knife skills", "fermentation", "vegan baking",
         "cast iron pans", "risotto", "spice blends", "sous vide", "homemade pasta"),
        ("What can I cook with {ingredient}, {ingredient2} and rice?",
         "Give me a {diet} dinner recipe for {n} people.",
         "How do I substitute {ingredient} in a cake?",
         "How long should I cook {ingredient} in the oven?",
         "Plan a week of {diet} lunches."),
        {"ingredient": ("chickpeas", "salmon", "eggs", "tofu", "spinach", "butter", "chicken "
                        "thighs", "sweet potatoes", "lentils", "mushrooms"),
         "diet": ("vegetarian", "low-carb", "gluten-free", "high-protein", "budget", "quick")}),
    "travel": Topic(
        ("travel insurance", "packing light", "jet lag", "budget travel", "rail passes",
         "travelling with kids", "solo travel", "visa requirements"),
        ("Plan a {n}-day itinerary for {city}.", "What should I pack for {city} in {month}?",
         "Is {city} or {city2} better for a first trip?",
         "What are some hidden gems in {city}?", "How do I get from the airport to {city} centre?"),
        {"city": ("Lisbon", "Kyoto", "Mexico City", "Prague", "Cape Town", "Hanoi", "Montreal",
                  "Edinburgh", "Istanbul", "Buenos Aires"),
         "month": ("January", "April", "July", "October", "December")}),
    "writing": Topic(
        ("cover letters", "email etiquette", "persuasive writing", "active voice",
         "storytelling", "technical documentation", "meeting summaries", "toasts"),
        ("Write an email to my {person} asking for {request}.",
         "Rewrite this to sound more {tone}: '{sentence}'",
         "Proofread: '{sentence}'",
         "Write a {tone} message declining {request}.",
         "Help me write a toast for my {person}'s wedding."),
        {"person": ("landlord", "manager", "colleague", "professor", "client", "brother",
                    "best friend", "neighbour"),
         "request": ("a deadline extension", "a raise", "a refund", "feedback on my draft",
                     "a day off", "a meeting next week"),
         "tone": ("professional", "friendly", "confident", "polite", "concise", "warm"),
         "sentence": ("I wanted to circle back on the thing we discussed.",
                      "their going to send the report tomorrow hopefully",
                      "Sorry for the late reply, things has been busy.",
                      "We regret to inform you that the event is cancelled.")}),
    "health": Topic(
        ("strength training", "sleep hygiene", "intermittent fasting", "stretching",
         "running form", "hydration", "posture", "stress management", "HIIT workouts"),
        ("Create a {n}-week {goal} plan for a beginner.",
         "Is it okay to {activity} every day?", "What should I eat before {activity}?",
         "How do I stay motivated to {activity}?"),
        {"goal": ("5k running", "weight loss", "muscle gain", "flexibility", "core strength"),
         "activity": ("run", "lift weights", "swim", "cycle", "do yoga", "walk 10k steps")}),
    "finance": Topic(
        ("index funds", "emergency funds", "compound interest", "credit scores", "budgeting",
         "retirement accounts", "inflation", "mortgages", "dollar-cost averaging"),
        ("How should I budget a monthly income of {amount}?",
         "Is it better to pay off debt or invest {amount}?",
         "Explain how a {product} works.", "What happens to a {product} when rates rise?"),
        {"amount": ("$2,500", "$4,000", "3,000 euros", "$6,500", "£2,200"),
         "product": ("bond", "ETF", "fixed-rate mortgage", "savings account", "credit card")}),
    "history": Topic(
        ("the fall of Rome", "the Silk Road", "the printing press", "the Cold War",
         "the French Revolution", "the Meiji Restoration", "the Industrial Revolution",
         "the Byzantine Empire", "the Renaissance", "the space race"),
        ("What caused {thing}?", "Who were the key figures of {thing}?",
         "How did {thing} affect everyday life?", "Write a timeline of {thing}.")),
    "science": Topic(
        ("black holes", "photosynthesis", "CRISPR", "plate tectonics", "quantum entanglement",
         "vaccines", "climate feedback loops", "entropy", "the immune system", "neutron stars"),
        ("How do scientists know about {thing}?", "What's the latest research on {thing}?",
         "Explain the chemistry behind {thing}.", "Why is {thing} important?")),
    "language": Topic(
        ("Spanish subjunctive", "Japanese particles", "German cases", "French pronunciation",
         "Mandarin tones", "Italian verb conjugation", "English phrasal verbs"),
        ("How do you say '{phrase}' in {language}?", "Correct my {language}: '{attempt}'",
         "Give me {n} common {language} phrases for {situation}."),
        {"phrase": ("where is the train station", "I'm allergic to nuts", "nice to meet you",
                    "can I pay by card", "I'm running late"),
         "language": ("Spanish", "French", "German", "Japanese", "Italian", "Portuguese"),
         "attempt": ("Yo soy muy cansado hoy.", "Ich habe gegangen nach Hause.",
                     "Je suis allé au magasin hier soir avec mon amis."),
         "situation": ("ordering food", "business meetings", "small talk", "shopping")}),
    "career": Topic(
        ("salary negotiation", "job interviews", "career change", "remote work",
         "performance reviews", "networking", "burnout", "leadership"),
        ("How do I answer '{question}' in an interview?",
         "I'm a {role} thinking about becoming a {role2}. Advice?",
         "Improve this resume bullet: '{bullet}'"),
        {"question": ("tell me about yourself", "what's your biggest weakness",
                      "why do you want to leave your job", "where do you see yourself in 5 years"),
         "role": ("teacher", "nurse", "accountant", "sales rep", "junior developer", "designer"),
         "bullet": ("Responsible for social media accounts.", "Worked on the backend team.",
                    "Helped customers with problems.")}),
    "home": Topic(
        ("houseplants", "composting", "painting walls", "fixing a leaky tap", "decluttering",
         "raised garden beds", "insulation", "mould prevention"),
        ("My {plant} has yellow leaves. What's wrong?", "How do I fix a {problem}?",
         "What can I plant in {month} in a small balcony?"),
        {"plant": ("monstera", "basil", "fiddle leaf fig", "tomato plant", "snake plant"),
         "problem": ("squeaky door", "running toilet", "cracked tile", "stuck window"),
         "month": ("March", "May", "September", "November")}),
    "entertainment": Topic(
        ("film noir", "jazz improvisation", "board game design", "anime", "podcasting",
         "classical music", "indie games", "science fiction novels"),
        ("Recommend {n} movies like {work}.", "What are the themes of {work}?",
         "Suggest a playlist for {mood}."),
        {"work": ("Blade Runner", "Spirited Away", "The Godfather", "Dune", "Pride and "
                  "Prejudice", "Breaking Bad"),
         "mood": ("a rainy Sunday", "a road trip", "studying", "a dinner party")}),
    "family": Topic(
        ("toddler sleep", "screen time", "potty training", "dog training", "cat behaviour",
         "teenagers and phones", "sibling rivalry"),
        ("My {age} won't {behaviour}. Any tips?", "Ideas for a rainy day with a {age}?",
         "How much should a {pet} eat per day?"),
        {"age": ("2-year-old", "5-year-old", "teenager", "toddler"),
         "behaviour": ("sleep through the night", "eat vegetables", "do homework",
                       "stop biting"),
         "pet": ("puppy", "senior cat", "rabbit", "labrador")}),
    "business": Topic(
        ("product-market fit", "pricing strategy", "SEO", "customer retention", "OKRs",
         "content marketing", "cold outreach", "unit economics", "A/B testing"),
        ("Write a product description for {product}.",
         "Give me {n} taglines for {product}.", "How do I market {product} on a small budget?",
         "Write a LinkedIn post announcing {product}."),
        {"product": ("a budgeting app", "handmade candles", "a B2B analytics tool",
                     "a dog-walking service", "an online Spanish course",
                     "a coffee subscription")}),
    "data": Topic(
        ("p-values", "linear regression", "pivot tables", "data cleaning", "SQL joins",
         "dashboards", "time series forecasting", "outliers", "normalization"),
        ("How do I {task} in {tool}?", "Write a {tool} formula to {task}.",
         "Which chart should I use to show {what}?"),
        {"task": ("remove duplicates", "calculate a moving average", "join two tables",
                  "count unique values", "fill missing values", "group by month"),
         "tool": ("Excel", "Google Sheets", "pandas", "SQL", "R", "Power BI"),
         "what": ("sales over time", "market share", "a distribution of ages",
                  "correlation between two variables")}),
    "philosophy": Topic(
        ("stoicism", "utilitarianism", "free will", "existentialism", "the trolley problem",
         "epistemology", "virtue ethics", "the ship of Theseus")),
    "math": Topic(
        ("derivatives", "integrals", "probability", "matrices", "prime numbers", "logarithms",
         "the Pythagorean theorem", "Bayes' theorem", "limits", "eigenvalues"),
        ("Solve for x: {equation}.", "What is the derivative of {function}?",
         "What's the probability of {event}?"),
        {"equation": ("3x + 7 = 22", "x^2 - 5x + 6 = 0", "2(x - 4) = 3x + 1", "5x/2 = 15"),
         "function": ("x^3 sin(x)", "ln(x^2 + 1)", "e^(2x) / x", "sqrt(3x + 4)"),
         "event": ("rolling two sixes", "drawing two aces from a deck",
                   "getting at least 3 heads in 5 flips")}),
    "admin": Topic(
        ("tenancy agreements", "GDPR", "small claims", "freelance contracts", "tax deductions",
         "warranty rights", "power of attorney"),
        ("Summarize my rights regarding {issue} in general terms.",
         "Draft a polite complaint about {issue}."),
        {"issue": ("a late deposit refund", "a faulty laptop", "a cancelled flight",
                   "noise from neighbours", "an unpaid invoice")}),
}
# fmt: on

STUDY_TOPICS = ("math", "science", "history", "programming", "language", "philosophy", "data")
WORK_TOPICS = ("programming", "writing", "business", "data", "admin", "career")
