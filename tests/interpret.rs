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

/// Each `main.star` fails to interpret with an error at `at` saying `msg`.
fn assert_errors(cases: &[(String, &str, &str)]) {
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
        (main(&format!("    plan.add_service(name = \"a\", config = ServiceConfig(image = {NB}))\n    plan.add_service(name = \"a\", config = ServiceConfig(image = {NB}))")), "main.star:3:5", "a service named 'a' is already added by this plan"),
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
    assert_errors(&cases);
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

/// The builtins and arguments public packages use beyond the first round:
/// each interprets to the plan Kurtosis would run.
#[test]
fn builtins_public_packages_use_interpret() {
    let main = r#"
def run(plan):
    up = plan.upload_files(src = "/data", name = "data")
    cfg = ServiceConfig(
        image = "busybox",
        ports = {"http": PortSpec(number = 80, application_protocol = "http")},
        files = {
            "/both": Directory(artifact_names = [up, "rendered"]),
            "/state": Directory(persistent_key = "db-data", size = 100),
        },
        cmd = ["serve", "--ip=KURTOSIS_IP"],
        env_vars = {"SELF": "KURTOSIS_IP"},
        private_ip_address_placeholder = "KURTOSIS_IP",
        node_selectors = {"disk": "ssd"},
        tolerations = [Toleration(key = "k", operator = "Equal", value = "v", effect = "NoSchedule", toleration_seconds = 5)],
        publish_udp = True,
        tty_enabled = True,
    )
    plan.render_templates(config = {"a.txt": struct(template = "{{.x}}", data = {"x": 1})}, name = "rendered")
    svc = plan.add_service(name = "web", config = cfg, force_update = True)
    if hasattr(cfg, "public_ports"):
        fail("public_ports was not given")
    plan.print(str(cfg.ports["http"].number))
    task = plan.run_sh(
        run = "echo hi > /out/x.txt\necho done",
        image = "busybox",
        files = {"/in": up},
        store = ["/out/x.txt", StoreSpec(src = "/out", name = "out-dir")],
        wait = None,
        env_vars = {"A": "1"},
        tolerations = [],
        node_selectors = {},
    )
    py = plan.run_python(run = "print(1)", args = ["a"], packages = ["requests"], image = "python:3.12")
    stored = plan.store_service_files(service_name = "web", src = "/etc/hostname", name = "hostname")
    got = plan.get_files_artifact(name = "hostname")
    services = plan.get_services()
    plan.set_service(name = "web", config = ServiceConfig(image = "busybox", cmd = ["other"]))
    return {
        "task": [task.output, task.code, task.files_artifacts],
        "py": py.files_artifacts,
        "stored": [stored, got],
        "services": [s.name for s in services],
        "cluster": plan.get_cluster_type(),
        "indent": json.indent(json.encode({"b": [1, {}], "a": {"c": []}})),
        "decoded": json.decode("{\"k\": [1, 2]}"),
        "t": [time.from_timestamp(86400 * 366 + 3661).year, time.parse_duration("1m30s"), time.second],
        "now": time.now().unix > 0,
    }
"#;
    let plan = run(
        &[("main.star", main), ("data/f.txt", "x\n")],
        serde_json::Value::Null,
    )
    .unwrap();
    let out = &plan.output;
    assert_eq!(out["cluster"], "docker");
    assert_eq!(out["services"], serde_json::json!(["web"]));
    assert_eq!(out["stored"], serde_json::json!(["hostname", "hostname"]));
    assert_eq!(
        out["task"][2],
        serde_json::json!(["task-sh-files-1", "out-dir"])
    );
    assert!(out["task"][0].as_str().unwrap().contains("output"));
    assert_eq!(out["py"], serde_json::json!([]));
    // Go's json.Indent: keys in their order, tab indents, empty {} and [].
    assert_eq!(
        out["indent"],
        "{\n\t\"b\": [\n\t\t1,\n\t\t{}\n\t],\n\t\"a\": {\n\t\t\"c\": []\n\t}\n}"
    );
    assert_eq!(out["decoded"], serde_json::json!({"k": [1, 2]}));
    assert_eq!(
        out["t"],
        serde_json::json!([1971, 90_000_000_000i64, 1_000_000_000])
    );
    assert_eq!(out["now"], true);
    let add = plan
        .steps
        .iter()
        .find_map(|s| match &s.instruction {
            Instruction::AddService {
                config,
                force_update,
                ..
            } => Some((config.clone(), *force_update)),
            _ => None,
        })
        .unwrap();
    assert!(add.1, "force_update");
    let files = serde_json::to_value(&add.0.files).unwrap();
    assert_eq!(
        files,
        serde_json::json!({
            "/both": {"artifact_names": ["data", "rendered"]},
            "/state": {"persistent_key": "db-data", "size": 100},
        })
    );
    assert_eq!(
        add.0.private_ip_address_placeholder.as_deref(),
        Some("KURTOSIS_IP")
    );
    assert_eq!(add.0.tolerations.len(), 1);
    assert!(add.0.publish_udp);
    let task = plan
        .steps
        .iter()
        .find_map(|s| match &s.instruction {
            Instruction::RunTask { kind, task, .. } if kind == "sh" => Some(task.clone()),
            _ => None,
        })
        .unwrap();
    // As Kurtosis: the script is run as one line.
    assert_eq!(
        task.command,
        vec!["sh", "-c", "echo hi > /out/x.txt echo done"]
    );
    assert!(task.wait.is_none());
    let py = plan
        .steps
        .iter()
        .find_map(|s| match &s.instruction {
            Instruction::RunTask { kind, task, .. } if kind == "python" => Some(task.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(py.command, vec!["python", "-c", "print(1)", "a"]);
    assert_eq!(py.packages, vec!["requests"]);
    assert_eq!(py.wait.as_ref().unwrap().to_string(), "180s");
    assert!(plan
        .steps
        .iter()
        .any(|s| matches!(&s.instruction, Instruction::SetService { name, .. } if name == "web")));
}

#[test]
fn newer_builtins_refuse_bad_arguments_at_their_place() {
    let main = |body: &str| format!("def run(plan):\n{body}\n");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            main(r#"    Directory()"#),
            "main.star:2:5",
            "exactly one of them",
        ),
        (
            main(r#"    Directory(artifact_names = ["a"], persistent_key = "k")"#),
            "main.star:2:5",
            "exactly one of them",
        ),
        (
            main(r#"    Directory(persistent_key = "../x")"#),
            "main.star:2:5",
            "persistent_key '../x'",
        ),
        (
            main(r#"    Directory(artifact_names = [])"#),
            "main.star:2:5",
            "at least one",
        ),
        (
            main(r#"    Toleration(operator = "Maybe")"#),
            "main.star:2:5",
            "operator 'Maybe'",
        ),
        (
            main(r#"    StoreSpec(src = "/x", name = "a/b")"#),
            "main.star:2:5",
            "'a/b' is invalid",
        ),
        (
            main(r#"    plan.run_sh(run = "true", store = ["relative"])"#),
            "main.star:2:5",
            "not an absolute path",
        ),
        (
            main(r#"    plan.run_sh(run = "true", files = {"/x": "missing"})"#),
            "main.star:2:5",
            "no artifact of that name exists",
        ),
        (
            main(r#"    plan.run_sh(run = "true", wait = "later")"#),
            "main.star:2:5",
            "'later' is not a duration",
        ),
        (
            main(r#"    plan.store_service_files(service_name = "ghost", src = "/x")"#),
            "main.star:2:5",
            "there is no service 'ghost'",
        ),
        (
            main(r#"    plan.get_files_artifact(name = "nothing")"#),
            "main.star:2:5",
            "no files artifact named 'nothing'",
        ),
        (
            main(
                r#"    ServiceConfig(image = "x", files = {"/d": Directory(artifact_names = ["nope"])})
    plan.add_service(name = "a", config = ServiceConfig(image = "x", files = {"/d": Directory(artifact_names = ["nope"])}))"#,
            ),
            "main.star:3:5",
            "'nope'",
        ),
        (
            main(r#"    json.indent("{not json")"#),
            "main.star:2:5",
            "not valid JSON",
        ),
        (
            main(r#"    plan.set_service(name = "ghost", config = ServiceConfig(image = "x"))"#),
            "main.star:2:5",
            "there is no service 'ghost'",
        ),
        (
            main(r#"    read_file("https://example.invalid/x")"#),
            "main.star:2:5",
            "remote packages are not available here",
        ),
    ];
    assert_errors(&cases);
}

#[test]
fn a_missing_argument_of_run_is_located_at_its_def() {
    let text = "# a package\n\ndef run(plan, name, other, count = 1):\n    plan.print(name)\n";
    let err = run(&[("main.star", text)], serde_json::json!({"other": 1}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("main.star:3:1") && err.contains("'name'") && !err.contains("'other'"),
        "{err}"
    );
}

#[test]
fn tab_indented_packages_interpret() {
    let plan = run(
        &[(
            "main.star",
            "def run(plan):\n\tx = {\n\t\t\"a\": 1,\t\n\t}\n\tplan.print(\"a\\tb\")\n\treturn x\n",
        )],
        serde_json::Value::Null,
    )
    .unwrap();
    assert_eq!(plan.output, serde_json::json!({"a": 1}));
    assert!(matches!(&plan.steps[0].instruction, Instruction::Print { msg } if msg == "a\tb"));
}

/// A re-run into an enclave declares its services and artifacts again:
/// that is no clash (execution keeps or replaces them); a second
/// declaration within one plan still is.
#[test]
fn a_rerun_may_declare_what_the_enclave_has() {
    let dir = package(&[(
        "main.star",
        "def run(plan):\n    plan.render_templates(config = {\"a\": struct(template = \"x\", data = {})}, name = \"cfg\")\n    plan.add_service(name = \"web\", config = ServiceConfig(image = \"x\", files = {\"/c\": \"cfg\"}))\n",
    )]);
    let pkg = Package::open(dir.path()).unwrap();
    let existing = nixoci::plan::values::ServiceInfo::new("web", "10.0.0.2", &Default::default());
    let plan = interpret(
        &pkg,
        &RunOptions {
            existing_services: vec![existing],
            existing_artifacts: vec!["cfg".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(plan.steps.len(), 2);
}

/// As in Kurtosis, files copied out of a container (a task's `store`,
/// `store_service_files`) may replace an artifact of the same name, which
/// packages use to update an artifact step by step; uploads and templates
/// may not.
#[test]
fn stored_files_may_replace_an_artifact_uploads_may_not() {
    let ok = "def run(plan):\n    a = plan.run_sh(run = \"true\", store = [StoreSpec(src = \"/d\", name = \"cfg\")])\n    b = plan.run_sh(run = \"true\", files = {\"/d\": \"cfg\"}, store = [StoreSpec(src = \"/d\", name = \"cfg\")])\n    return [a.files_artifacts, b.files_artifacts]\n";
    let plan = run(&[("main.star", ok)], serde_json::Value::Null).unwrap();
    assert_eq!(plan.output, serde_json::json!([["cfg"], ["cfg"]]));
    let bad = "def run(plan):\n    plan.upload_files(src = \"/data\", name = \"x\")\n    plan.upload_files(src = \"/data\", name = \"x\")\n";
    let err = run(
        &[("main.star", bad), ("data/f", "1")],
        serde_json::Value::Null,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("main.star:3:5") && err.contains("'x' is already made"),
        "{err}"
    );
}
