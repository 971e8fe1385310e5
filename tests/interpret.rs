//! The fast tier: `plan::interpret` is a pure function of a package's files
//! and its arguments, so its errors and plans are checked in process, with
//! no Nix, containerd or subprocess. Every error names `file:line:column`.

use nixoci::plan::{interpret, Instruction, Package, Plan, PlanError, RunOptions};
use std::path::Path;

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// A package with `files` (a kurtosis.yml is added) and a flake directory
/// `nix/` for NixBuildSpec's checks.
fn package(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("kurtosis.yml", "name: github.com/example/pkg\n"),
            ("nix/flake.nix", "{ outputs = _: { }; }\n"),
            ("sub/README", "no flake here\n"),
        ],
    );
    write(dir.path(), files);
    dir
}

fn run(files: &[(&str, &str)], args: serde_json::Value) -> Result<Plan, PlanError> {
    let dir = package(files);
    let pkg = Package::open(dir.path()).unwrap();
    interpret(
        &pkg,
        &RunOptions {
            args,
            ..Default::default()
        },
    )
}

const NB: &str =
    r#"NixBuildSpec(image_name = "web", build_context_dir = "./", flake_location_dir = "nix")"#;

#[test]
fn every_interpretation_error_names_its_place() {
    let main = |body: &str| format!("def run(plan):\n{body}\n");
    let cases: Vec<(String, &str, &str)> = vec![
        ("def run(plan):\n    plan.print(\"x\"\n".into(), "main.star:3:1", "Parse error"),
        (main(r#"    plan.add_service(name = "a", config = ServiceConfig(image = "x", bogus = 1))"#), "main.star:2:43", "bogus"),
        (main(r#"    NixBuildSpec(image_name = 1, build_context_dir = "./")"#), "main.star:2:5", "Value for 'image_name' was expected to be a starlark.String but was 'starlark.Int'"),
        (main(r#"    NixBuildSpec(image_name = "", build_context_dir = "./")"#), "main.star:2:5", "Value for 'image_name' was an empty string. This is disallowed"),
        (main(r#"    NixBuildSpec(image_name = "w", build_context_dir = "./sub")"#), "main.star:2:5", "no flake.nix in"),
        (main(r#"    NixBuildSpec(image_name = "w", build_context_dir = "../")"#), "main.star:2:5", "leaves the package"),
        (main(r#"    NixBuildSpec(image_name = "Not A Ref!", build_context_dir = "./", flake_location_dir = "nix")"#), "main.star:2:5", "image_name"),
        (main(r#"    plan.upload_files(src = "/../../etc/passwd")"#), "main.star:2:5", "leaves the package"),
        (main(&format!("    plan.add_service(name = \"a\", config = ServiceConfig(image = {NB}))\n    plan.add_service(name = \"a\", config = ServiceConfig(image = {NB}))")), "main.star:3:5", "a service named 'a' already exists"),
        (main(r#"    plan.exec(service_name = "ghost", recipe = ExecRecipe(command = ["true"]))"#), "main.star:2:5", "there is no service 'ghost'"),
        (main("    unknown_builtin()"), "main.star:2:5", "unknown_builtin"),
        (main(r#"    plan.add_service(name = "a", config = ServiceConfig(image = "x", files = {"/d": "nothing"}))"#), "main.star:2:5", "no artifact of that name exists"),
        (main(r#"    plan.add_service(name = "Bad_Name", config = ServiceConfig(image = "x"))"#), "main.star:2:5", "service name 'Bad_Name' is invalid"),
        (main(r#"    PortSpec(number = 70000)"#), "main.star:2:5", "70000"),
        (main(r#"    PortSpec(number = 80, transport_protocol = "QUIC")"#), "main.star:2:5", "transport_protocol 'QUIC'"),
        (main(r#"    PortSpec(number = 80, wait = "soon")"#), "main.star:2:5", "'soon' is not a duration"),
        // Durations past what a Duration holds are refused, not a panic.
        (main(r#"    PortSpec(number = 80, wait = "99999999999999999999h")"#), "main.star:2:5", "longer than a duration can be"),
        (main(r#"    ReadyCondition(recipe = ExecRecipe(command = ["true"]), field = "code", assertion = "==", target_value = 0, timeout = "3000000h")"#), "main.star:2:5", "longer than a duration can be"),
        (main(r#"    ReadyCondition(recipe = ExecRecipe(command = ["true"]), field = "code", assertion = "~=", target_value = 0)"#), "main.star:2:5", "~="),
        (main(r#"    User(uid = -1)"#), "main.star:2:5", "uid"),
        (main(r#"    ServiceConfig(image = "x", max_memory = 9223372036854775807)"#), "main.star:2:5", "outside 0..=16777216 (megabytes)"),
        (main(r#"    ServiceConfig(image = "x", max_cpu = -1)"#), "main.star:2:5", "outside 0..=1000000 (millicores)"),
        (main(r#"    plan.verify(value = 1, assertion = "LIKE", target_value = 1)"#), "main.star:2:5", "LIKE"),
        (main(&format!("    plan.add_service(name = \"a\", config = ServiceConfig(image = {NB}))\n    plan.request(service_name = \"a\", recipe = GetHttpRequestRecipe(port_id = \"http\", endpoint = \"/\"))")), "main.star:3:5", "service 'a' has no port 'http' (ports: none)"),
        (main(&format!("    plan.add_service(name = \"a\", config = ServiceConfig(image = {NB}))\n    plan.wait(service_name = \"a\", recipe = GetHttpRequestRecipe(port_id = \"web\", endpoint = \"/\"), field = \"code\", assertion = \"==\", target_value = 200)")), "main.star:3:5", "has no port 'web'"),
        (main(&format!("    plan.add_service(name = \"a\", config = ServiceConfig(image = {NB}))\n    plan.wait(service_name = \"a\", recipe = ExecRecipe(command = [\"true\"]), field = \"body\", assertion = \"==\", target_value = 0)")), "main.star:3:5", "body"),
        (main(r#"    plan.wait(service_name = "ghost", recipe = ExecRecipe(command = ["true"]), field = "code", assertion = "==", target_value = 0)"#), "main.star:2:5", "there is no service 'ghost'"),
    ];
    for (i, (text, at, msg)) in cases.iter().enumerate() {
        let err = run(&[("main.star", text)], serde_json::Value::Null)
            .expect_err(&format!("case {i} interpreted:\n{text}"))
            .to_string();
        assert!(
            err.contains(at) && err.contains(msg),
            "case {i}: wanted {at} and {msg:?}, got:\n{err}"
        );
    }
}

#[test]
fn a_flake_path_nix_cannot_carry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg#1");
    write(
        &pkg,
        &[
            ("kurtosis.yml", "name: github.com/example/pkg\n"),
            ("nix/flake.nix", "{ outputs = _: { }; }\n"),
            ("main.star", &format!("def run(plan):\n    plan.add_service(name = \"a\", config = ServiceConfig(image = {NB}))\n")),
        ],
    );
    let err = interpret(&Package::open(&pkg).unwrap(), &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("main.star:2:") && err.contains("'#' or '?'"),
        "{err}"
    );
}

#[test]
fn errors_in_imported_modules_name_the_imported_file() {
    let err = run(
        &[
            ("main.star", "lib = import_module(\"/lib/helpers.star\")\n\ndef run(plan):\n    lib.web(plan)\n"),
            ("lib/helpers.star", "inner = import_module(\"./inner.star\")\n\ndef web(plan):\n    inner.bad(plan)\n"),
            ("lib/inner.star", "def bad(plan):\n    plan.add_service(name = \"x\", config = ServiceConfig(image = 7))\n"),
        ],
        serde_json::Value::Null,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("lib/inner.star:2:"), "{err}");
}

#[test]
fn arguments_reach_run_and_missing_ones_are_named() {
    let text = "def run(plan, name, count = 1):\n    plan.print(msg = name * count)\n    return {\"n\": count}\n";
    let plan = run(
        &[("main.star", text)],
        serde_json::json!({"name": "ab", "count": 2}),
    )
    .unwrap();
    assert_eq!(plan.output, serde_json::json!({"n": 2}));
    assert!(matches!(&plan.steps[0].instruction, Instruction::Print { msg } if msg == "abab"));
    let err = run(&[("main.star", text)], serde_json::json!({"nope": 1}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    let err = run(&[("main.star", text)], serde_json::Value::Null)
        .unwrap_err()
        .to_string();
    assert!(err.contains("name"), "{err}");
}

#[test]
fn plans_hold_typed_values() {
    let text = format!(
        "def run(plan):\n    s = plan.add_service(name = \"web\", config = ServiceConfig(image = {NB}, ports = {{\"http\": PortSpec(number = 80, wait = \"1m30s\")}}))\n    plan.wait(service_name = \"web\", recipe = GetHttpRequestRecipe(port_id = \"http\", endpoint = \"/\"), field = \"code\", assertion = \"==\", target_value = 200, interval = \"250ms\", timeout = \"2m\")\n    return s.ip_address\n"
    );
    let plan = run(&[("main.star", &text)], serde_json::Value::Null).unwrap();
    let Instruction::AddService { config, .. } = &plan.steps[0].instruction else {
        panic!("{:?}", plan.steps[0]);
    };
    let wait = config.ports["http"].wait.as_ref().unwrap();
    assert_eq!(wait.get(), std::time::Duration::from_secs(90));
    let Instruction::Wait {
        interval, timeout, ..
    } = &plan.steps[1].instruction
    else {
        panic!("{:?}", plan.steps[1]);
    };
    assert_eq!(interval.get(), std::time::Duration::from_millis(250));
    assert_eq!(timeout.get(), std::time::Duration::from_secs(120));
    // A future reference, resolved at execution.
    assert!(plan.output.as_str().unwrap().starts_with("{{kurtosis:"));
    assert_eq!(plan.nix_images().len(), 1);
    // The plan's JSON shows durations as the package wrote them.
    let json = serde_json::to_value(&plan).unwrap();
    assert!(json.to_string().contains("\"1m30s\""), "{json}");
}
