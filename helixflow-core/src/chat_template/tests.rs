//! Chat template tests. Expected strings come from Python's jinja2 3.1 with Hugging Face's
//! settings (`ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` and its
//! `tojson`/`raise_exception`); the real model's template is covered by
//! `tests/chat_template_golden.rs`.

use super::*;

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
}

const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

#[test]
fn llama3_template_renders() {
    let template = ChatTemplate::new(
        LLAMA3,
        "llama3",
        Some("<|begin_of_text|>"),
        Some("<|eot_id|>"),
    )
    .unwrap();
    let messages = [
        msg("system", "You are helpful."),
        msg("user", "  Hi there \n"),
    ];
    assert_eq!(
        template.render(&messages, true).unwrap(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

/// Python string methods, block whitespace control and a trailing newline in the source.
const PY_METHODS: &str = "{% for message in messages %}
    {% if message.role.startswith('sys') %}
[SYS] {{ message.content.strip() }}
    {% else %}
<{{ message['role'].upper() }}> {{ message.content.strip().replace('cats', 'dogs') }}{{ eos_token }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}<ASSISTANT>{% endif %}
";

#[test]
fn python_methods_and_whitespace_control() {
    let template = ChatTemplate::new(PY_METHODS, "py", None, Some("<|eot_id|>")).unwrap();
    let messages = [
        msg("system", " Be brief. "),
        msg("user", "\tI like cats.  "),
    ];
    assert_eq!(
        template.render(&messages, true).unwrap(),
        "[SYS] Be brief.\n<USER> I like dogs.<|eot_id|>\n<ASSISTANT>"
    );
    assert_eq!(
        template.render(&messages, false).unwrap(),
        "[SYS] Be brief.\n<USER> I like dogs.<|eot_id|>\n"
    );
}

#[test]
fn tojson_is_python_json_dumps() {
    let template = ChatTemplate::new(
        "{{ messages | tojson }}|{{ messages[0] | tojson(indent=2) }}",
        "json",
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        template.render(&[msg("user", "say \"<hi>\" & é\n")], false).unwrap(),
        "[{\"role\": \"user\", \"content\": \"say \\\"<hi>\\\" & é\\n\"}]|{\n  \"role\": \"user\",\n  \"content\": \"say \\\"<hi>\\\" & é\\n\"\n}"
    );
}

#[test]
fn raise_exception_fails_with_its_message() {
    let source = "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}{{ m.content }}{% endfor %}";
    let template = ChatTemplate::new(source, "strict-model", None, None).unwrap();
    assert_eq!(template.render(&[msg("user", "hi")], true).unwrap(), "hi");
    let err = template
        .render(&[msg("assistant", "hello"), msg("user", "hi")], true)
        .unwrap_err();
    match err {
        Error::ChatTemplate { model, reason } => {
            assert_eq!(model, "strict-model");
            assert!(
                reason.contains("Conversation roles must alternate user/assistant"),
                "{reason}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn syntax_errors_name_the_model() {
    let err = ChatTemplate::new(
        "{% for m in messages %}{{ m.content }",
        "broken-model",
        None,
        None,
    )
    .unwrap_err();
    match &err {
        Error::ChatTemplate { model, .. } => assert_eq!(model, "broken-model"),
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("broken-model"), "{err}");
}

#[test]
fn chatml_fallback() {
    let template = ChatTemplate::new(CHATML_TEMPLATE, "plain", None, None).unwrap();
    let messages = [msg("system", "S"), msg("user", "U")];
    assert_eq!(
        template.render(&messages, true).unwrap(),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        template.render(&messages, false).unwrap(),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
    );
}

#[test]
fn strftime_now_is_available() {
    let source = "{%- if not date_string is defined %}\n    {%- set date_string = strftime_now(\"%d %b %Y\") %}\n{%- endif %}\nToday Date: {{ date_string }}";
    let template = ChatTemplate::new(source, "llama3.1", None, None).unwrap();
    let out = template.render(&[], true).unwrap();
    let date = out
        .strip_prefix("Today Date: ")
        .unwrap_or_else(|| panic!("{out:?}"));
    let parts: Vec<&str> = date.split(' ').collect();
    assert_eq!(parts.len(), 3, "{date}");
    assert!(
        parts[0].len() == 2 && parts[0].chars().all(|c| c.is_ascii_digit()),
        "{date}"
    );
    assert_eq!(parts[1].len(), 3, "{date}");
    assert!(parts[2].parse::<u32>().unwrap() >= 2024, "{date}");
}

/// Hostile templates (issue 19): each is an error for the render, never an abort, a hang or
/// a runaway allocation.
mod hostile {
    use super::*;

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate::new(source, "hostile", None, None).unwrap()
    }

    fn reason(result: Result<String>) -> String {
        match result {
            Err(Error::ChatTemplate { model, reason }) => {
                assert_eq!(model, "hostile");
                reason
            }
            other => panic!("expected a template error, got {other:?}"),
        }
    }

    #[test]
    fn a_doubling_string_is_refused_and_the_template_disabled() {
        // Forty doublings would ask for a terabyte.
        let t = template(
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}\
             {% endfor %}{{ ns.s|length }}",
        );
        let why = reason(t.render(&[msg("user", "hi")], true));
        assert!(why.contains("memory"), "{why}");
        let again = reason(t.render(&[msg("user", "hi")], true));
        assert!(again.contains("disabled"), "{again}");
        // Another model's template is not affected.
        let fine = ChatTemplate::new(CHATML_TEMPLATE, "fine", None, None).unwrap();
        assert!(fine.render(&[msg("user", "hi")], true).is_ok());
    }

    #[test]
    fn nested_loops_run_out_of_fuel() {
        let t = template(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}x",
        );
        let start = std::time::Instant::now();
        let why = reason(t.render(&[msg("user", "hi")], true));
        assert!(why.contains("fuel"), "{why}");
        // Bounded, whatever the machine: far below the ten billion iterations asked for.
        assert!(start.elapsed() < RENDER_TIME, "{:?}", start.elapsed());
    }

    #[test]
    fn output_is_limited_by_the_size_of_the_conversation() {
        let t = template("{% for i in range(60000) %}{{ messages[0].content }}{% endfor %}");
        let why = reason(t.render(&[msg("user", &"x".repeat(100))], true));
        assert!(why.contains("larger than"), "{why}");
        // The same loop over a short output is fine.
        let ok = template("{% for i in range(1000) %}{{ messages[0].content }}{% endfor %}");
        assert_eq!(ok.render(&[msg("user", "ab")], true).unwrap().len(), 2000);
    }
}

#[test]
fn roles_outside_the_api_are_refused() {
    let messages = serde_json::json!([{"role": "wizard", "content": "hi"}]);
    match messages_from_openai(&messages) {
        Err(Error::InvalidRequest(message)) => assert!(message.contains("wizard"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    for role in ROLES {
        let messages = serde_json::json!([{"role": role, "content": "hi"}]);
        assert!(messages_from_openai(&messages).is_ok(), "{role}");
    }
}
