"""Schemathesis hooks for HelixFlow's property-based API run (scripts/schemathesis).

Generated requests may ask for any number of tokens; a few thousand-token generations
would spend the whole time budget on a handful of cases. The run is about the API's
contract (no 5xx, answers valid against the OpenAPI document), not long generations, so
valid generation lengths are capped here. Invalid values (negative, strings, huge) are
passed through untouched, so refusals are still exercised.
"""

import random

import schemathesis

# The served models: most generated requests name one, so that they reach the engine.
CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
# Generation lengths above this are lowered to it.
MAX_GENERATED_TOKENS = 8
# Most choices per request.
MAX_CHOICES = 2


def _cap(body, field, limit):
    value = body.get(field)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value and value > limit:
        if value < 2**63:  # larger ones are the refusal cases
            body[field] = limit


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict) or "model" not in body:
        return
    path = case.operation.path
    if isinstance(body.get("model"), str) and random.random() < 0.8:
        body["model"] = EMBED if path.endswith("/embeddings") else CHAT
    if path.endswith("/chat/completions") or path.endswith("/completions"):
        if "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = MAX_GENERATED_TOKENS
        _cap(body, "max_tokens", MAX_GENERATED_TOKENS)
        _cap(body, "max_completion_tokens", MAX_GENERATED_TOKENS)
        _cap(body, "n", MAX_CHOICES)


# Answers by status, written to $HELIXFLOW_SCHEMATHESIS_STATUSES (JSON) after each call, so
# the runner can say how many requests reached the models.
_statuses = {}


@schemathesis.hook
def after_call(context, case, response):
    import json
    import os

    key = f"{case.operation.method.upper()} {case.operation.path} {response.status_code}"
    _statuses[key] = _statuses.get(key, 0) + 1
    path = os.environ.get("HELIXFLOW_SCHEMATHESIS_STATUSES")
    if path:
        with open(path, "w") as f:
            json.dump(_statuses, f, indent=1, sort_keys=True)
