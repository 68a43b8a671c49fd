// Tool calls through a running `helixflow serve` with the official OpenAI Node SDK (6.x,
// which runs on the Node 18 that Debian ships): its stream helper accumulates the calls from
// the streamed deltas, and they match the whole answer's. Usage: node openai_tools.cjs
// BASE_URL API_KEY, with `openai` installed where NODE_PATH points (CommonJS, as ES modules
// ignore NODE_PATH). Prints one line per check.

const { OpenAI } = require("openai");

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120_000 });
const model = "smollm2-135m-instruct";

function check(name, condition, detail = "") {
  if (!condition) {
    console.log(`FAIL ${name}: ${JSON.stringify(detail)}`);
    process.exit(1);
  }
  console.log(`ok ${name}`);
}

const tools = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 20 } },
      required: ["city"],
      additionalProperties: false,
    },
  },
}];
const request = {
  model,
  messages: [{ role: "user", content: "What is the weather in Paris?" }],
  tools,
  tool_choice: "required",
  temperature: 1.0,
  seed: 4,
  max_tokens: 200,
};

async function main() {
  const stream = client.chat.completions.stream(request);
  let argumentDeltas = 0;
  stream.on("tool_calls.function.arguments.delta", () => { argumentDeltas += 1; });
  const final = await stream.finalChatCompletion();
  const calls = final.choices[0].message.tool_calls;
  check("stream helper", calls?.length > 0 && final.choices[0].finish_reason === "tool_calls", final);
  check("arguments deltas", argumentDeltas > 0, argumentDeltas);
  for (const call of calls) {
    const args = JSON.parse(call.function.arguments);
    check("call", call.id.startsWith("call_") && call.function.name === "get_weather"
      && typeof args.city === "string", call);
  }

  // A raw stream: id, type and name first, then arguments, then the finish reason.
  const pieces = [];
  let finish = null;
  for await (const chunk of await client.chat.completions.create({ ...request, stream: true })) {
    for (const choice of chunk.choices) {
      pieces.push(...(choice.delta.tool_calls ?? []));
      finish = choice.finish_reason ?? finish;
    }
  }
  check("raw stream", pieces[0]?.id && pieces[0]?.type === "function" && pieces[0]?.function?.name
    && finish === "tool_calls", pieces);

  const whole = await client.chat.completions.create(request);
  const wholeCalls = whole.choices[0].message.tool_calls.map((c) => [c.function.name, c.function.arguments]);
  check("stream equals whole", JSON.stringify(calls.map((c) => [c.function.name, c.function.arguments]))
    === JSON.stringify(wholeCalls), [calls, wholeCalls]);
  console.log("all ok");
}

main().catch((error) => {
  console.log(`FAIL ${error}`);
  process.exit(1);
});
