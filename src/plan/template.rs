//! `plan.render_templates`: Go `text/template` syntax through the gtmpl
//! crate (`{{.Field}}`, `{{.a.b}}`, `{{range}}`, `{{if}}`, the builtin
//! functions of text/template). Data is JSON, converted to gtmpl values.

use gtmpl::{Context, Template, Value};

/// Check that `text` parses as a template.
pub fn check(text: &str) -> Result<(), String> {
    let mut t = Template::default();
    t.parse(text).map_err(|e| e.to_string())
}

/// Render `text` with `data`.
pub fn render(text: &str, data: &serde_json::Value) -> Result<String, String> {
    let mut t = Template::default();
    t.parse(text).map_err(|e| e.to_string())?;
    t.render(&Context::from(value(data)))
        .map_err(|e| e.to_string())
}

fn value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (None, Some(u), _) => Value::from(u),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::Nil,
        },
        J::String(s) => Value::String(s.clone()),
        J::Array(a) => Value::Array(a.iter().map(value).collect()),
        J::Object(o) => Value::Map(o.iter().map(|(k, x)| (k.clone(), value(x))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_ranges_and_conditions() {
        let data =
            json!({"Name": "web", "nested": {"port": 8080}, "peers": ["a", "b"], "on": true});
        let out = render(
            "{{.Name}}:{{.nested.port}} {{range .peers}}[{{.}}]{{end}}{{if .on}} on{{end}}",
            &data,
        )
        .unwrap();
        assert_eq!(out, "web:8080 [a][b] on");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(check("{{.Name").is_err());
        assert!(check("{{range .x}}").is_err());
        assert!(check("plain {{.x}}").is_ok());
    }
}
