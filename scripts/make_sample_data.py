"""Write the bundled sample dataset: `sft_sweep/assets/sample/chat.jsonl`.

    python scripts/make_sample_data.py

Synthetic, deterministic (seeded) short tasks with exact answers, in English and
Chinese, in the project's normalized chat schema (`messages` with roles
system/user/assistant/tool, assistant `tool_calls`, optional top-level `tools`):

- arithmetic word problems (1-9)       -> a bare number                        tag arithmetic
- sentiment classification             -> {"sentiment": "positive"} (JSON)      tag sentiment
- multi-turn follow-ups                -> the first answer times 2 or 3         tag follow_up
- tool calls (weather / calculator)    -> tool call, tool result, final answer  tag tool_call
Chinese rows also carry the tag zh; evaluation reports exact match per tag.

The tasks are small and regular on purpose: the embedded tiny model has to learn them
visibly (sentiment >= 0.9, arithmetic >= 0.5 exact match) within two minutes on two CPU
cores -- which is why the operands stay below 10.
"""

import json
import random
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "sft_sweep" / "assets" / "sample"
OUT = SAMPLE / "chat.jsonl"
N_ROWS = 2400
SEED = 1234
MAX_OPERAND = 9

NAMES_EN = ["Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Leo", "Zoe"]
NAMES_ZH = ["小明", "小红", "小刚", "小丽", "小华", "小军"]
ITEMS_EN = ["apples", "books", "pens", "coins", "cards", "eggs"]
ITEMS_ZH = ["苹果", "本书", "支笔", "枚硬币", "张卡片", "个鸡蛋"]
# Reviews are composed (subject x opinion x phrasing) so that exact dedup leaves hundreds of them.
SUBJECTS_EN = ["food", "service", "hotel room", "movie", "phone", "book", "coffee", "staff", "music", "app",
               "camera", "pizza"]
GOOD_EN = ["great", "excellent", "wonderful", "amazing", "fantastic", "lovely", "superb"]
BAD_EN = ["terrible", "awful", "bad", "boring", "disappointing", "rude", "cold"]
PHRASES_EN = ["The {s} was {a}.", "I think the {s} is {a}.", "Honestly, the {s} was {a}!", "What a {a} {s}."]
SUBJECTS_ZH = ["菜", "服务", "房间", "电影", "手机", "书", "咖啡", "音乐"]
GOOD_ZH = ["很好", "非常棒", "太好了", "很精彩"]
BAD_ZH = ["很差", "太糟糕了", "很无聊", "让人失望"]
PHRASES_ZH = ["这个{s}{a}。", "我觉得{s}{a}！", "说实话，{s}{a}。"]
CITIES = {"Paris": 18, "London": 12, "Tokyo": 22, "Beijing": 25, "Berlin": 15, "Cairo": 33}
SYSTEM = "You are a helpful assistant."

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current temperature of a city in Celsius.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two integers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]}}},
]


def language(text) -> list[str]:
    return ["zh"] if any("\u4e00" <= ch <= "\u9fff" for ch in text) else []


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def arithmetic(rng):
    a, b = rng.randint(1, MAX_OPERAND), rng.randint(1, MAX_OPERAND)
    if rng.random() < 0.5:
        name, item = rng.choice(NAMES_EN), rng.choice(ITEMS_EN)
        if rng.random() < 0.5:
            q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
            ans = a + b
        else:
            a, b = max(a, b), min(a, b)
            q = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
            ans = a - b
    else:
        name, item = rng.choice(NAMES_ZH), rng.choice(ITEMS_ZH)
        if rng.random() < 0.5:
            q = f"{name}有{a}{item}，又得到了{b}{item}。{name}现在有多少{item}？"
            ans = a + b
        else:
            a, b = max(a, b), min(a, b)
            q = f"{name}有{a}{item}，送出了{b}{item}。还剩多少{item}？"
            ans = a - b
    return {"messages": [user(q), assistant(str(ans))], "tags": ["arithmetic", *language(q)]}, ans


def sentiment(rng):
    positive = rng.random() < 0.5
    if rng.random() < 0.6:
        text = rng.choice(PHRASES_EN).format(s=rng.choice(SUBJECTS_EN), a=rng.choice(GOOD_EN if positive else BAD_EN))
        q = f"Classify the sentiment of this review and answer in JSON: {text}"
    else:
        text = rng.choice(PHRASES_ZH).format(s=rng.choice(SUBJECTS_ZH), a=rng.choice(GOOD_ZH if positive else BAD_ZH))
        q = f"判断这条评论的情感，用JSON回答：{text}"
    label = "positive" if positive else "negative"
    msgs = [user(q), assistant(json.dumps({"sentiment": label}))]
    if rng.random() < 0.3:
        msgs.insert(0, {"role": "system", "content": SYSTEM})
    return {"messages": msgs, "tags": ["sentiment", *language(q)]}


def follow_up(rng):
    row, ans = arithmetic(rng)
    chinese = bool(language(row["messages"][0]["content"]))
    k = rng.choice([2, 3])
    if chinese:
        q2 = {2: "再乘以2是多少？", 3: "再乘以3是多少？"}[k]
    else:
        q2 = {2: "What is that times 2?", 3: "What is that times 3?"}[k]
    row["messages"] += [user(q2), assistant(str(ans * k))]
    row["tags"] = ["follow_up", *language(row["messages"][0]["content"])]
    return row


def tool_call(rng):
    if rng.random() < 0.5:
        city = rng.choice(list(CITIES))
        temp = CITIES[city] + rng.randint(-3, 3)
        q = f"What is the weather in {city}?"
        call = {"name": "get_weather", "arguments": {"city": city}}
        result = json.dumps({"city": city, "temperature_c": temp})
        final = f"It is {temp} degrees Celsius in {city}."
    else:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        q = f"Use the calculator to add {a} and {b}."
        call = {"name": "add", "arguments": {"a": a, "b": b}}
        result = json.dumps({"result": a + b})
        final = f"{a} + {b} = {a + b}"
    msgs = [
        {"role": "system", "content": SYSTEM},
        user(q),
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]},
        {"role": "tool", "content": result},
        assistant(final),
    ]
    tools = [t for t in TOOLS if t["function"]["name"] == call["name"]]  # the tool it calls
    return {"messages": msgs, "tools": tools, "tags": ["tool_call"]}


def main():
    rng = random.Random(SEED)
    makers = [lambda: arithmetic(rng)[0], lambda: sentiment(rng), lambda: follow_up(rng), lambda: tool_call(rng)]
    # Arithmetic is the hardest kind for a tiny model, so it gets the most rows; tool-call rows are long
    # (the tool's schema), so few of them.
    weights = [0.55, 0.25, 0.15, 0.05]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as f:
        for i in range(N_ROWS):
            row = rng.choices(makers, weights)[0]()
            row = {"id": f"sample-{i:05d}", "source": "sample", **row}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {N_ROWS} rows to {OUT}")
    write_alpaca(random.Random(SEED + 1), 300)
    write_sharegpt(random.Random(SEED + 2), 200)


def write_alpaca(rng, n):
    """The same kinds of tasks as Alpaca rows (instruction/input/output, some with system/history)."""
    rows = []
    for _ in range(n):
        if rng.random() < 0.5:
            row, _ = arithmetic(rng)
            rows.append({"instruction": row["messages"][0]["content"], "input": "",
                         "output": row["messages"][1]["content"]})
        else:
            positive = rng.random() < 0.5
            text = rng.choice(PHRASES_EN).format(s=rng.choice(SUBJECTS_EN),
                                                 a=rng.choice(GOOD_EN if positive else BAD_EN))
            label = "positive" if positive else "negative"
            rows.append({"instruction": "Classify the sentiment of the review. Answer in JSON.", "input": text,
                         "output": json.dumps({"sentiment": label})})
        if rng.random() < 0.1:
            rows[-1]["system"] = SYSTEM
        if rng.random() < 0.1:
            rows[-1]["history"] = [["Hello!", "Hello! How can I help?"]]
    path = SAMPLE / "alpaca.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {n} rows to {path}")


def write_sharegpt(rng, n):
    """ShareGPT rows (from/value; human, gpt, function_call, observation) with a `tools` string."""
    rows = []
    for _ in range(n):
        if rng.random() < 0.5:
            msgs = tool_call(rng)["messages"]
            call = msgs[2]["tool_calls"][0]["function"]
            conv = [{"from": "human", "value": msgs[1]["content"]},
                    {"from": "function_call", "value": json.dumps(call, ensure_ascii=False)},
                    {"from": "observation", "value": msgs[3]["content"]},
                    {"from": "gpt", "value": msgs[4]["content"]}]
            rows.append({"conversations": conv, "system": SYSTEM, "tools": json.dumps(TOOLS)})
        else:
            msgs = follow_up(rng)["messages"]
            rows.append({"conversations": [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]}
                                           for m in msgs]})
    path = SAMPLE / "sharegpt.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {n} rows to {path}")


if __name__ == "__main__":
    main()
