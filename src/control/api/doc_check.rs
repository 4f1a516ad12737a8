//! Test helpers that hold answers to the OpenAPI document: a status must be listed for
//! its operation, and a JSON body must validate against the schema listed for it.

use serde_json::Value;

use super::OPENAPI_DOCUMENT;

pub fn document() -> Value {
    serde_json::from_str(OPENAPI_DOCUMENT).expect("openapi.json is JSON")
}

/// Follows a `$ref` inside the document (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => v,
    }
}

/// Panics unless `status` is documented for `method path` (the template, e.g.
/// `/api/v1/clients/{client_id}`) and `body` (if JSON is documented) validates.
pub fn check(method: &str, path: &str, status: u16, body: &[u8]) {
    let doc = document();
    let op = doc["paths"]
        .get(path)
        .and_then(|p| p.get(method))
        .unwrap_or_else(|| panic!("{method} {path} is not in openapi.json"));
    let response = op["responses"].get(status.to_string()).unwrap_or_else(|| {
        panic!("{method} {path} answered {status}, which openapi.json does not list")
    });
    let response = resolve(&doc, response);
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        assert!(
            body.is_empty(),
            "{method} {path} {status}: a body where none is documented: {}",
            String::from_utf8_lossy(body)
        );
        return;
    };
    let instance: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{method} {path} {status}: not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let mut root = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"].clone(),
    });
    for (k, v) in schema.as_object().expect("a schema object") {
        root[k] = v.clone();
    }
    let validator = jsonschema::validator_for(&root).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the body does not match openapi.json: {errors:?}\n{instance:#}"
    );
}
