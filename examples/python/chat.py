"""HelixFlow from Python: a streamed chat answer, a whole one with its token counts, and the
cosine similarity of two sentences' embeddings, all in this process (no server).

Run it from the repository root:

    pip install ./helixflow-py
    python examples/python/chat.py

The first run downloads the two default models into $HELIXFLOW_HOME (~/.cache/helixflow).
"""

import math

import helixflow

SKY = [{"role": "user", "content": "Explain in two sentences why the sky is blue."}]
COLORS = [{"role": "user", "content": "Name three primary colors."}]
SENTENCES = ["The weather is lovely today.", "It's so sunny outside!"]


def main() -> None:
    with helixflow.Engine("smollm2-135m-instruct") as engine:
        # Streamed: print each piece of the answer as soon as the engine generates it.
        for chunk in engine.chat(SKY, max_tokens=96, temperature=0, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
        print("\n")

        # Whole: one object shaped like the OpenAI SDK's, usage included.
        answer = engine.chat(COLORS, max_tokens=32, temperature=0)
        print(answer.choices[0].message.content)
        if answer.usage is not None:
            usage = answer.usage
            print(f"[{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens]\n")

    with helixflow.Engine("all-minilm-l6-v2") as embedder:
        a, b = embedder.embed(SENTENCES)
        dot = sum(x * y for x, y in zip(a, b))
        cosine = dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
        print(f"cosine({SENTENCES[0]!r}, {SENTENCES[1]!r}) = {cosine:.4f}")


if __name__ == "__main__":
    main()
