//! `nixoci run` with real Nix, a private containerd and runc: the packages of
//! fixtures/packages, enclave and service commands, and bad input.

mod common;

use common::{copy_dir, free_port, nixoci_with_cache, show, Containerd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A package copied to a temp dir (busybox beside its flake), a private
/// containerd and a private NIXOCI_HOME. Everything nixoci started is
/// removed on drop (`clean -a`), before containerd stops.
struct Env {
    tmp: tempfile::TempDir,
    containerd: Option<Containerd>,
}

impl Env {
    fn new(package: &str, with_containerd: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/packages")
            .join(package);
        let pkg = tmp.path().join("pkg");
        copy_dir(&src, &pkg);
        // busybox beside each flake: nix/ or the package root.
        for dir in [pkg.join("nix"), pkg.clone()] {
            if dir.join("flake.nix").is_file() {
                std::fs::create_dir_all(dir.join("bb")).unwrap();
                std::fs::copy("/bin/busybox", dir.join("bb/busybox")).unwrap();
            }
        }
        Env {
            tmp,
            containerd: with_containerd.then(Containerd::start),
        }
    }

    fn pkg(&self) -> PathBuf {
        self.tmp.path().join("pkg")
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    fn nixoci(&self) -> Command {
        let mut c = nixoci_with_cache(&self.tmp.path().join("cache"));
        c.env("NIXOCI_HOME", self.home());
        match &self.containerd {
            Some(d) => c.env("CONTAINERD_ADDRESS", d.socket()),
            // Nothing may answer: interpretation errors come first.
            None => c.env("CONTAINERD_ADDRESS", self.tmp.path().join("none.sock")),
        };
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        self.nixoci().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.out(args);
        assert!(o.status.success(), "nixoci {args:?}:\n{}", show(&o));
        o
    }

    fn ctr(&self, args: &[&str]) -> String {
        let o = self
            .containerd
            .as_ref()
            .unwrap()
            .ctr("default")
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "ctr {args:?}: {}", show(&o));
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.containerd.is_some() {
            let _ = self.out(&["clean", "-a"]);
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn hello_web_runs_and_its_services_are_managed() {
    let env = Env::new("hello-web", true);
    let pkg = env.pkg();
    let pkg = pkg.to_str().unwrap();
    let o = env.ok(&["run", pkg, r#"{"port": 18080}"#, "--enclave", "e1"]);
    // plan.print's line, then what run returned.
    let text = stdout(&o);
    assert!(
        text.starts_with("hello from nix (rendered for web)\n"),
        "{}",
        show(&o)
    );
    let out: serde_json::Value = serde_json::from_str(&text[text.find("\n{").unwrap()..]).unwrap();
    assert_eq!(
        out["page"],
        "hello from nix (rendered for web)\n",
        "{}",
        show(&o)
    );
    assert_eq!(out["url"], "http://web:18080");
    assert!(stderr(&o).contains("Verification succeeded: 0 == 0"));

    // Logs come from the file the shim writes.
    let logs = stdout(&env.ok(&["service", "logs", "e1", "web"]));
    assert!(logs.contains("serving /www on port 18080"), "{logs}");
    assert!(logs.contains("response:200"), "{logs}");
    // Uploaded files are mounted as the container's own copy, as in
    // Kurtosis: writable, and what it writes stays out of the artifact.
    // exec passes the exit code on.
    let about = env.ok(&[
        "service",
        "exec",
        "e1",
        "client",
        "--",
        "cat",
        "/data/static/about.txt",
    ]);
    assert_eq!(stdout(&about), "static file from the package\n");
    env.ok(&[
        "service",
        "exec",
        "e1",
        "client",
        "--",
        "sh",
        "-c",
        "echo x > /data/x",
    ]);
    let artifact = env.home().join("enclaves/e1/artifacts/static");
    assert!(artifact.join("static/about.txt").is_file());
    assert!(!artifact.join("x").exists());
    let three = env.out(&[
        "service", "exec", "e1", "client", "--", "sh", "-c", "exit 3",
    ]);
    assert_eq!(three.status.code(), Some(3), "{}", show(&three));

    // Stop and start.
    env.ok(&["service", "stop", "e1", "web"]);
    let inspect = stdout(&env.ok(&["enclave", "inspect", "e1"]));
    assert!(inspect.contains("web\tstopped"), "{inspect}");
    let fetch = [
        "service",
        "exec",
        "e1",
        "client",
        "--",
        "wget",
        "-qO-",
        "http://web:18080/",
    ];
    assert!(!env.out(&fetch).status.success());
    env.ok(&["service", "start", "e1", "web"]);
    assert_eq!(
        stdout(&env.ok(&fetch)),
        "hello from nix (rendered for web)\n"
    );

    // A second enclave reuses the images (no layer read, nothing unpacked)
    // and, in its own subnet, the same port.
    let o2 = env.ok(&["run", pkg, r#"{"port": 18080}"#, "--enclave", "e2"]);
    let subnet = |o: &Output| {
        let e = stderr(o);
        let at = e.find("subnet 10.199.").unwrap_or_else(|| panic!("{e}"));
        e[at..].split(')').next().unwrap().to_string()
    };
    assert_ne!(subnet(&o), subnet(&o2));
    let err2 = stderr(&o2);
    assert_eq!(
        err2.matches("0 of 3 layers read from the store, 0 unpacked, 3 already unpacked")
            .count(),
        2,
        "{err2}"
    );

    // Without a public port, the service's own address answers from the host.
    let url = stdout(&env.ok(&["port", "print", "e2", "web", "http"]));
    assert!(url.starts_with("http://10.199."), "{url}");
    assert!(host_get(url.trim()).contains("hello from nix (rendered for web)"));

    // enclave rm: refused while running without -f, then leaves nothing.
    let refused = env.out(&["enclave", "rm", "e1"]);
    assert_eq!(refused.status.code(), Some(2), "{}", show(&refused));
    env.ok(&["enclave", "rm", "-f", "e1"]);
    let containers = env.ctr(&["containers", "ls", "-q"]);
    assert!(!containers.contains("nixoci-e1-"), "{containers}");
    assert!(containers.contains("nixoci-e2-web"), "{containers}");
    assert!(!env.ctr(&["tasks", "ls"]).contains("nixoci-e1-"));
    assert!(!env.ctr(&["snapshots", "ls"]).contains("nixoci-e1-"));
    assert_eq!(env.ctr(&["leases", "ls", "-q"]).trim(), "");
    assert!(!env.home().join("enclaves/e1").exists());
    let ls = stdout(&env.ok(&["enclave", "ls"]));
    assert!(ls.contains("e2\tdefault\t2\t2"), "{ls}");
    // clean -a removes the rest, and nixoci's images.
    env.ok(&["clean", "-a"]);
    assert_eq!(env.ctr(&["containers", "ls", "-q"]).trim(), "");
    assert!(!env.ctr(&["images", "ls", "-q"]).contains("hello-web"));
}

#[test]
fn builtins_run_against_real_services() {
    let env = Env::new("checks", true);
    let pkg = env.pkg();
    let o = env.ok(&["run", pkg.to_str().unwrap(), "--enclave", "b"]);
    let err = stderr(&o);
    let out: serde_json::Value = serde_json::from_str(
        &stdout(&o)
            .lines()
            .filter(|l| !l.starts_with("waited"))
            .collect::<String>(),
    )
    .unwrap();
    assert_eq!(
        out,
        serde_json::json!({"services": ["a", "b"], "a": "a"}),
        "{err}"
    );
    assert!(stdout(&o).contains("waited: 0"), "{}", show(&o));
    assert!(err.contains("Wait took 2 tries"), "{err}");
    assert!(
        err.contains("Verification succeeded: \"from-a a\\n\" == \"from-a a\\n\""),
        "{err}"
    );
    assert!(err.contains("Service 'b' removed"), "{err}");
    // User and limits reached runc: uid, and the memory and CPU cgroup.
    let id = env.ok(&["service", "exec", "b", "a", "--", "id", "-u"]);
    assert_eq!(stdout(&id), "1000\n");
    let cg = |f: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        // cgroup v2
        assert_eq!(cg("nixoci/nixoci-b-a/memory.max").trim(), "67108864");
        assert_eq!(cg("nixoci/nixoci-b-a/cpu.max").trim(), "50000 100000");
    } else {
        assert_eq!(
            cg("memory/nixoci/nixoci-b-a/memory.limit_in_bytes").trim(),
            "67108864"
        );
        assert_eq!(cg("cpu/nixoci/nixoci-b-a/cpu.cfs_quota_us").trim(), "50000");
    }
    let labels = env.ctr(&["containers", "info", "nixoci-b-a"]);
    assert!(labels.contains("\"team\": \"test\""), "{labels}");
    // service rm: container, namespace and hosts entry go.
    env.ok(&["service", "rm", "b", "c"]);
    let dir = env.home().join("enclaves/b");
    assert!(!dir.join("net/c.json").exists());
    assert!(dir.join("net/a.json").exists());
    let hosts = std::fs::read_to_string(dir.join("hosts")).unwrap();
    assert!(
        !hosts.contains("\tc\n") && hosts.contains("\ta\n"),
        "{hosts}"
    );
    assert!(!env.ctr(&["containers", "ls", "-q"]).contains("nixoci-b-c"));
    // The image is in the namespace now: by plain name and by ImageSpec.
    let named = env.ok(&[
        "run",
        pkg.to_str().unwrap(),
        r#"{"mode": "named"}"#,
        "--enclave",
        "named",
    ]);
    assert!(
        stderr(&named).contains("Verification succeeded: \"named\\n\" == \"named\\n\""),
        "{}",
        show(&named)
    );
    env.ok(&["enclave", "rm", "-f", "named"]);
    let services = env.ctr(&["containers", "ls", "-q"]);
    assert_eq!(
        services.split_whitespace().collect::<Vec<_>>(),
        ["nixoci-b-a"]
    );
}

#[test]
fn execution_failures_are_clear_and_leave_nothing_running() {
    let env = Env::new("checks", true);
    let pkg = env.pkg();
    let pkg = pkg.to_str().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "quits",
            &[
                "exited at once with code 7",
                "bye from quits",
                "main.star:29:9",
            ],
        ),
        (
            "broken",
            &[
                "deliberate failure in checks-broken",
                "building image checks-broken",
            ],
        ),
        (
            "verify",
            &[
                "main.star:35:9",
                "Verification failed: \"5\\n\" == \"6\\n\" is false",
            ],
        ),
        (
            "code",
            &[
                "exit code 4, which is not among the acceptable codes [0]",
                "failing",
            ],
        ),
        (
            "missing-image",
            &["image docker.io/library/no-such-image:1 is not in containerd namespace 'default'"],
        ),
    ];
    for (mode, wants) in cases {
        let args = format!(r#"{{"mode": "{mode}"}}"#);
        let o = env.out(&["run", pkg, &args, "--enclave", mode]);
        assert_eq!(o.status.code(), Some(1), "{mode}: {}", show(&o));
        for w in *wants {
            assert!(
                stderr(&o).contains(w),
                "{mode}: wanted {w:?} in\n{}",
                stderr(&o)
            );
        }
        assert!(!stderr(&o).contains("not reached"));
    }
    // A service that quit is not left behind.
    let containers = env.ctr(&["containers", "ls", "-q"]);
    assert!(!containers.contains("nixoci-quits-"), "{containers}");
    let tasks = env.ctr(&["tasks", "ls"]);
    assert!(!tasks.contains("nixoci-quits"), "{tasks}");
}

/// A package made of one main.star.
fn package(dir: &Path, main: &str) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("kurtosis.yml"), "name: github.com/test/pkg\n").unwrap();
    std::fs::write(dir.join("main.star"), main).unwrap();
    std::fs::create_dir_all(dir.join("nix")).unwrap();
    std::fs::write(dir.join("nix/flake.nix"), "{ outputs = { self }: { }; }\n").unwrap();
}

#[test]
fn arguments_are_given_inline_as_yaml_file_or_whole() {
    let env = Env::new("hello-web", false);
    let dir = env.tmp.path().join("args");
    package(
        &dir,
        "def run(plan, name = \"x\", n = 1):\n    plan.print(\"%s-%d\" % (name, n))\n",
    );
    let d = dir.to_str().unwrap();
    let o = env.ok(&["run", d, r#"{"name": "y", "n": 2}"#, "--dry-run"]);
    assert!(stdout(&o).contains("print \"y-2\""), "{}", show(&o));
    std::fs::write(env.tmp.path().join("a.yaml"), "name: z\nn: 3\n").unwrap();
    let f = env.tmp.path().join("a.yaml");
    let o = env.ok(&["run", d, "--args-file", f.to_str().unwrap(), "--dry-run"]);
    assert!(stdout(&o).contains("print \"z-3\""), "{}", show(&o));
    let o = env.out(&["run", d, r#"{"nope": 1}"#, "--dry-run"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("'nope' is not a parameter of run(plan, name, n)"),
        "{}",
        show(&o)
    );
    let o = env.out(&["run", d, "[1, 2]", "--dry-run"]);
    assert_eq!(o.status.code(), Some(2));
    // The whole dict, another main file and function.
    std::fs::write(
        dir.join("other.star"),
        "def go(plan, args):\n    plan.print(args[\"name\"] + json.encode(args))\n",
    )
    .unwrap();
    let o = env.ok(&[
        "run",
        d,
        "name: w",
        "--main-file",
        "other.star",
        "--main-function-name",
        "go",
        "--dry-run",
    ]);
    assert!(
        stdout(&o).contains(r#"print "w{\"name\":\"w\"}""#),
        "{}",
        show(&o)
    );
}

#[test]
fn interpretation_errors_name_the_place_and_run_nothing() {
    let env = Env::new("hello-web", false);
    let nb = "NixBuildSpec(image_name = \"web\", build_context_dir = \"./\", flake_location_dir = \"nix\")";
    let cases: Vec<(String, &str, &str)> = vec![
        ("def run(plan):\n    plan.print(\"x\"\n".into(), "main.star:3:1", "Parse error"),
        (
            "def run(plan):\n    plan.add_service(name = \"a\", config = ServiceConfig(image = \"x\", bogus = 1))\n".into(),
            "main.star:2:43",
            "bogus",
        ),
        (
            "def run(plan):\n    NixBuildSpec(image_name = 1, build_context_dir = \"./\")\n".into(),
            "main.star:2:5",
            "Value for 'image_name' was expected to be a starlark.String but was 'starlark.Int'",
        ),
        (
            "def run(plan):\n    NixBuildSpec(image_name = \"\", build_context_dir = \"./\")\n".into(),
            "main.star:2:5",
            "Value for 'image_name' was an empty string. This is disallowed",
        ),
        (
            "def run(plan):\n    NixBuildSpec(image_name = \"w\", build_context_dir = \"./sub\")\n".into(),
            "main.star:2:5",
            "no flake.nix in",
        ),
        (
            "def run(plan):\n    NixBuildSpec(image_name = \"w\", build_context_dir = \"../\")\n".into(),
            "main.star:2:5",
            "leaves the package",
        ),
        (
            "def run(plan):\n    plan.upload_files(src = \"/../../etc/passwd\")\n".into(),
            "main.star:2:5",
            "leaves the package",
        ),
        (
            format!("def run(plan):\n    plan.add_service(name = \"a\", config = ServiceConfig(image = {nb}))\n    plan.add_service(name = \"a\", config = ServiceConfig(image = {nb}))\n"),
            "main.star:3:5",
            "a service named 'a' is already added by this plan",
        ),
        (
            "def run(plan):\n    plan.exec(service_name = \"ghost\", recipe = ExecRecipe(command = [\"true\"]))\n".into(),
            "main.star:2:5",
            "there is no service 'ghost'",
        ),
        (
            "def run(plan):\n    unknown_builtin()\n".into(),
            "main.star:2:5",
            "unknown_builtin",
        ),
        (
            "def run(plan):\n    plan.add_service(name = \"a\", config = ServiceConfig(image = \"x\", files = {\"/d\": \"nothing\"}))\n".into(),
            "main.star:2:5",
            "no artifact of that name exists",
        ),
    ];
    for (i, (main, at, msg)) in cases.iter().enumerate() {
        let dir = env.tmp.path().join(format!("bad{i}"));
        package(&dir, main);
        for dry in [true, false] {
            let mut args = vec!["run", dir.to_str().unwrap(), "--enclave", "bad"];
            if dry {
                args.push("--dry-run");
            }
            let o = env.out(&args);
            assert_eq!(o.status.code(), Some(2), "case {i}: {}", show(&o));
            let err = stderr(&o);
            assert!(
                err.contains(at) && err.contains(msg),
                "case {i}: wanted {at} and {msg:?}:\n{err}"
            );
        }
        assert!(
            !env.home().join("enclaves/bad").exists(),
            "case {i} made an enclave"
        );
    }
}

#[test]
fn nix_build_spec_runs_dockertools_outputs() {
    let env = Env::new("dockertools-web", true);
    let pkg = env.pkg();
    for output in ["plain", "gzipped", "stream", "default"] {
        let args = format!(r#"{{"output": "{output}"}}"#);
        let o = env.ok(&["run", pkg.to_str().unwrap(), &args, "--enclave", output]);
        assert!(
            stdout(&o).contains("hello from a docker-archive"),
            "{output}: {}",
            show(&o)
        );
        assert!(
            stderr(&o).contains("(loaded /nix/store/"),
            "{output}: {}",
            show(&o)
        );
        env.ok(&["enclave", "rm", "-f", output]);
    }
    // Not an image, not a package: the error names the three forms.
    let o = env.out(&["run", pkg.to_str().unwrap(), r#"{"output": "notanimage"}"#]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stderr(&o).contains("none of the forms nixoci builds"),
        "{}",
        show(&o)
    );
}

/// GET from the host, with the standard library only.
fn host_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn nat_rules_of(enclave: &str) -> usize {
    let o = Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(&format!("nixoci-{enclave}")))
        .count()
}

#[test]
fn enclaves_have_networks_names_recipes_and_public_ports() {
    let env = Env::new("checks", true);
    let pkg = env.pkg();
    let pkg = pkg.to_str().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let args = |port: u16| format!(r#"{{"mode": "net", "public": {port}}}"#);
    // Two enclaves at once, each its own subnet; the same private port.
    let a = env.ok(&["run", pkg, &args(pa), "--enclave", "na"]);
    let b = env.ok(&["run", pkg, &args(pb), "--enclave", "nb"]);
    // Enclave names are host-wide: another nixoci home cannot take one.
    let home2 = env.tmp.path().join("home2");
    let o = env
        .nixoci()
        .env("NIXOCI_HOME", &home2)
        .args(["run", pkg, &args(free_port()), "--enclave", "na"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stderr(&o)
            .contains("an enclave named 'na' already exists on this host in another nixoci home"),
        "{}",
        show(&o)
    );
    assert!(!home2.join("enclaves/na").exists());
    // A public port another enclave holds is refused, naming both, and
    // the service that wanted it leaves nothing behind.
    let c = env.out(&["run", pkg, &args(pa), "--enclave", "nc"]);
    assert_eq!(c.status.code(), Some(1), "{}", show(&c));
    for want in [
        format!("public port {pa}/tcp of service 'srv' is already published"),
        "nixoci enclave rm -f na".to_string(),
    ] {
        assert!(stderr(&c).contains(&want), "wanted {want:?}:\n{}", show(&c));
    }
    assert_eq!(nat_rules_of("nc"), 0);
    assert!(!env.ctr(&["containers", "ls", "-q"]).contains("nixoci-nc-"));
    env.ok(&["enclave", "rm", "-f", "nc"]);
    // So is one a program on the host listens on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pt = taken.local_addr().unwrap().port();
    let t = env.out(&["run", pkg, &args(pt), "--enclave", "nt"]);
    assert_eq!(t.status.code(), Some(1), "{}", show(&t));
    assert!(
        stderr(&t).contains(&format!(
            "public port {pt}/tcp of service 'srv' is in use on 127.0.0.1"
        )),
        "{}",
        show(&t)
    );
    drop(taken);
    env.ok(&["enclave", "rm", "-f", "nt"]);
    let out = |o: &Output| -> serde_json::Value {
        let t = stdout(o);
        serde_json::from_str(&t[t.find('{').unwrap()..]).unwrap()
    };
    let (oa, ob) = (out(&a), out(&b));
    assert!(oa["srv"].as_str().unwrap().starts_with("10.199."), "{oa}");
    let subnet =
        |ip: &serde_json::Value| ip.as_str().unwrap().rsplit_once('.').unwrap().0.to_string();
    assert_ne!(subnet(&oa["srv"]), subnet(&ob["srv"]), "{oa} {ob}");
    assert_eq!(subnet(&oa["srv"]), subnet(&oa["peer"]));
    let err = stderr(&a);
    for want in [
        "Verification succeeded: \"nixoci\" == \"nixoci\"",
        "Verification succeeded: 3 == 3",
        "Verification succeeded: 5 == 5",
        "http://srv:8000",
        &format!("(127.0.0.1:{pa})"),
    ] {
        assert!(err.contains(want), "wanted {want:?}:\n{err}");
    }
    // The peer's address reached the service in the POST body, resolved.
    assert!(
        err.contains(&format!("\"from\": \"{}\"", oa["peer"].as_str().unwrap())),
        "{err}"
    );
    // Published on 127.0.0.1, and port print says where.
    let url = stdout(&env.ok(&["port", "print", "na", "srv", "http"]));
    assert_eq!(url.trim(), format!("http://127.0.0.1:{pa}"));
    let page = host_get(&format!("{}/data.json", url.trim()));
    assert!(page.contains("\"name\": \"nixoci\""), "{page}");
    let url_b = stdout(&env.ok(&["port", "print", "nb", "srv", "http"]));
    assert_eq!(url_b.trim(), format!("http://127.0.0.1:{pb}"));
    // The hosts file names every service.
    let hosts = stdout(&env.ok(&["service", "exec", "na", "peer", "--", "cat", "/etc/hosts"]));
    assert!(
        hosts.contains(&format!("{}\tsrv", oa["srv"].as_str().unwrap())),
        "{hosts}"
    );
    // enclave rm leaves no namespace, link, address or NAT rule behind.
    let bridge = {
        let rec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(env.home().join("enclaves/na/enclave.json")).unwrap(),
        )
        .unwrap();
        rec["network"]["bridge"].as_str().unwrap().to_string()
    };
    assert!(Path::new("/sys/class/net").join(&bridge).exists());
    assert!(nat_rules_of("na") > 0);
    env.ok(&["enclave", "rm", "-f", "na"]);
    assert!(!Path::new("/sys/class/net").join(&bridge).exists());
    assert_eq!(nat_rules_of("na"), 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("/enclaves/na/"), "{mounts}");
    assert!(nat_rules_of("nb") > 0);
}

#[test]
fn a_port_that_never_opens_fails_in_about_its_wait() {
    let env = Env::new("checks", true);
    let pkg = env.pkg();
    // Build first, so the timing below is the wait's.
    env.ok(&[
        "run",
        pkg.to_str().unwrap(),
        r#"{"mode": "builtins"}"#,
        "--enclave",
        "warm",
    ]);
    let start = std::time::Instant::now();
    let o = env.out(&[
        "run",
        pkg.to_str().unwrap(),
        r#"{"mode": "noport"}"#,
        "--enclave",
        "np",
    ]);
    let took = start.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("port 'p' (10.199."), "{}", show(&o));
    assert!(
        stderr(&o).contains("did not open within 2s"),
        "{}",
        show(&o)
    );
    assert!(stderr(&o).contains("idle: up"), "{}", show(&o));
    // About its 2 s wait plus setting up and removing the service, which a
    // loaded CI machine slows; well under the 15 s default wait either way.
    assert!((2.0..12.0).contains(&took), "took {took:.1}s");
    assert!(!env.ctr(&["tasks", "ls"]).contains("nixoci-np-"));
}

/// Start `run` of the slow mode and wait until its service is up.
fn start_slow(env: &Env, enclave: &str) -> std::process::Child {
    let log = env.tmp.path().join(format!("{enclave}.log"));
    let child = env
        .nixoci()
        .args([
            "run",
            env.pkg().to_str().unwrap(),
            r#"{"mode": "slow"}"#,
            "--enclave",
            enclave,
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("> wait")
    {
        assert!(
            start.elapsed().as_secs() < 120,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child
}

#[test]
fn ctrl_c_stops_a_run_and_a_killed_run_is_cleaned_up() {
    let env = Env::new("checks", true);
    // Ctrl-C: a clean stop, exit 130, what ran is reported and kept.
    let mut child = start_slow(&env, "intr");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(env.tmp.path().join("intr.log")).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        log.contains("interrupted after 1 of 2 instructions"),
        "{log}"
    );
    assert!(stdout(&env.ok(&["enclave", "inspect", "intr"])).contains("s\trunning"));

    // Killed: enclave rm still removes the service, its namespace, link and address.
    let mut child = start_slow(&env, "killed");
    child.kill().unwrap();
    child.wait().unwrap();
    let dir = env.home().join("enclaves/killed");
    // Killed mid-run: the service is attached and running, its wait in progress.
    assert!(dir.join("net/s.json").is_file());
    assert!(nat_rules_of("killed") > 0);
    // The service's image, in containerd, re-hashes whole after the kill.
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("enclave.json")).unwrap()).unwrap();
    let image = rec["services"]["s"]["image"].as_str().unwrap().to_string();
    let v = env.out(&["verify", &format!("containerd:{image}")]);
    assert!(v.status.success(), "{}", show(&v));
    env.ok(&["enclave", "rm", "-f", "killed"]);
    assert!(!dir.exists());
    assert_eq!(nat_rules_of("killed"), 0);
    assert!(!env
        .ctr(&["containers", "ls", "-q"])
        .contains("nixoci-killed-"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("/enclaves/killed/"), "{mounts}");
    let bridge = {
        let rec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(env.home().join("enclaves/intr/enclave.json")).unwrap(),
        )
        .unwrap();
        rec["network"]["bridge"].as_str().unwrap().to_string()
    };
    assert!(Path::new("/sys/class/net").join(&bridge).exists());
    env.ok(&["enclave", "rm", "-f", "intr"]);
    assert!(!Path::new("/sys/class/net").join(&bridge).exists());
}

#[test]
fn run_pulls_missing_images_with_image_spec_credentials() {
    let env = Env::new("checks", true);
    let htpasswd = env.tmp.path().join("htpasswd");
    let out = common::run(Command::new("htpasswd").args(["-Bbn", "tester", "s3cret-pass"]));
    std::fs::write(&htpasswd, out).unwrap();
    let reg = common::Registry::start(&format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        htpasswd.display()
    ));
    let image = format!("{}/checks/idle:1", reg.addr());
    // Pushed with credentials from a Docker config.
    let config = env.tmp.path().join("docker");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"username": "tester", "password": "s3cret-pass"}}}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    let flake = format!("{}#idle", env.pkg().join("nix").display());
    let o = env
        .nixoci()
        .env("DOCKER_CONFIG", &config)
        .args(["build", &flake, "--insecure", "--output"])
        .arg(format!("registry:{image}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    // The namespace lacks it: run pulls it with the ImageSpec's credentials.
    let empty = env.tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let run_with = |password: &str, enclave: &str, extra: &[&str]| {
        let args = format!(
            r#"{{"mode": "pulled", "pull_image": "{image}", "username": "tester", "password": "{password}"}}"#
        );
        env.nixoci()
            .env("DOCKER_CONFIG", &empty)
            .args([
                "run",
                env.pkg().to_str().unwrap(),
                &args,
                "--insecure",
                "--enclave",
                enclave,
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let run = |password: &str, enclave: &str| run_with(password, enclave, &[]);
    // Traced (-vvv): the logs must not show the password either.
    let bad = run_with("wrong-pass", "bad", &["-vvv"]);
    assert_eq!(bad.status.code(), Some(1), "{}", show(&bad));
    assert!(!stdout(&bad).contains("wrong-pass"));
    let err = stderr(&bad);
    assert!(
        err.contains("refused the credentials of user 'tester'"),
        "{err}"
    );
    assert!(!err.contains("wrong-pass"), "{err}");
    let good = run("s3cret-pass", "good");
    assert!(good.status.success(), "{}", show(&good));
    assert!(
        stderr(&good).contains(&format!("pulling {image}")),
        "{}",
        show(&good)
    );
    assert!(env.ctr(&["images", "ls", "-q"]).contains(&image));
    // No output shows the password: trace logs, --dry-run (plain and JSON),
    // errors, nor what the enclaves keep on disk.
    for (enclave, extra) in [
        ("traced", &["-vvv"][..]),
        ("dry", &["--dry-run"][..]),
        ("dryjson", &["--dry-run", "--json", "-vvv"][..]),
    ] {
        let o = run_with("s3cret-pass", enclave, extra);
        assert!(o.status.success(), "{}", show(&o));
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(!all.contains("s3cret-pass"), "{enclave}: {all}");
    }
    for f in walk(&env.home()) {
        if f.is_file() {
            let bytes = std::fs::read(&f).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("s3cret-pass") && !text.contains("wrong-pass"),
                "{}",
                f.display()
            );
        }
    }
}

/// `nixoci build --output containerd` and `nixoci run` go through one
/// pipeline: the same flake output under the same environment (including
/// `SOURCE_DATE_EPOCH`) gives the same manifest digest, and the epoch is
/// honoured by both.
#[test]
fn build_and_run_make_the_same_image() {
    let env = Env::new("hello-web", true);
    let pkg = env.pkg();
    std::fs::write(
        pkg.join("same.star"),
        "def run(plan):\n    plan.add_service(name = \"client\", config = ServiceConfig(image = NixBuildSpec(image_name = \"same-client\", build_context_dir = \"./\", flake_location_dir = \"nix\", flake_output = \"client\")))\n",
    )
    .unwrap();
    let pkg = pkg.to_str().unwrap();
    let mut digests = Vec::new();
    for epoch in ["1700000000", "1700000001"] {
        let o = env
            .nixoci()
            .env("SOURCE_DATE_EPOCH", epoch)
            .args(["run", pkg, "--main-file", "same.star", "--enclave", "same"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let ls = env.ctr(&["images", "ls"]);
        let line = ls
            .lines()
            .find(|l| l.starts_with("docker.io/library/same-client:latest "))
            .unwrap_or_else(|| panic!("no image:\n{ls}"));
        let from_run = line.split_whitespace().nth(2).unwrap().to_string();
        let flake = format!("{pkg}/nix#client");
        let o = env
            .nixoci()
            .env("SOURCE_DATE_EPOCH", epoch)
            .args([
                "build",
                &flake,
                "--output",
                "containerd",
                "--tag",
                "built-client:1",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let from_build = doc["manifest"]["digest"].as_str().unwrap().to_string();
        assert_eq!(from_run, from_build, "SOURCE_DATE_EPOCH={epoch}");
        digests.push(from_run);
        env.ok(&["enclave", "rm", "-f", "same"]);
    }
    assert_ne!(digests[0], digests[1], "the epoch changes the image");
}

/// A service whose setup fails after its network attachment (here: the
/// enclave's hosts file cannot be written) leaves no attachment, namespace,
/// record or container behind, and the same run succeeds once the cause is
/// gone.
#[test]
fn a_failed_service_is_undone_step_by_step() {
    let env = Env::new("hello-web", true);
    let pkg = env.pkg();
    let svc = |name: &str| {
        format!("def run(plan):\n    plan.add_service(name = \"{name}\", config = ServiceConfig(image = NixBuildSpec(image_name = \"undo-client\", build_context_dir = \"./\", flake_location_dir = \"nix\", flake_output = \"client\")))\n")
    };
    std::fs::write(pkg.join("a.star"), svc("a")).unwrap();
    std::fs::write(pkg.join("b.star"), svc("b")).unwrap();
    let pkg = pkg.to_str().unwrap();
    env.ok(&["run", pkg, "--main-file", "a.star", "--enclave", "undo"]);
    let dir = env.home().join("enclaves/undo");
    let hosts = dir.join("hosts");
    let saved = std::fs::read(&hosts).unwrap();
    std::fs::remove_file(&hosts).unwrap();
    std::fs::create_dir(&hosts).unwrap();
    let o = env.out(&["run", pkg, "--main-file", "b.star", "--enclave", "undo"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("hosts"), "{}", show(&o));
    assert!(!dir.join("netns/b").exists(), "b's namespace is left");
    let leftovers: Vec<String> = walk(&dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "b" || n == "b.json"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(leftovers.is_empty(), "left: {leftovers:?}");
    let containers = env.ctr(&["containers", "ls", "-q"]);
    assert!(
        !containers.lines().any(|l| l.ends_with("-b")),
        "{containers}"
    );
    let rec = std::fs::read_to_string(dir.join("enclave.json")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(&rec).unwrap();
    assert!(rec["services"].get("b").is_none(), "{rec}");
    assert!(rec["services"].get("a").is_some(), "{rec}");
    std::fs::remove_dir(&hosts).unwrap();
    std::fs::write(&hosts, saved).unwrap();
    env.ok(&["run", pkg, "--main-file", "b.star", "--enclave", "undo"]);
    let hosts_text = std::fs::read_to_string(&hosts).unwrap();
    assert!(
        hosts_text.contains("\ta\n") && hosts_text.contains("\tb\n"),
        "{hosts_text}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// `nixoci run --json` of the tasks fixture: what run returned, and what
/// the run said on stderr.
fn run_tasks(env: &Env, args: &str) -> (serde_json::Value, String) {
    let pkg = env.pkg();
    let o = env.ok(&[
        "run",
        pkg.to_str().unwrap(),
        args,
        "--enclave",
        "t1",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (report["output"].clone(), stderr(&o))
}

/// run_sh for real: a task's file is stored as an artifact and mounted,
/// merged with a template, into a service with a persistent directory and
/// its own IP in place of a placeholder; files stored from the running
/// service reach a second task (a link in them stays a link). Re-runs keep
/// what is unchanged, replace what changed or is forced; the persistent
/// directory survives `service rm` and re-runs and goes with the enclave.
#[test]
fn tasks_persistent_directories_and_reruns() {
    let env = Env::new("tasks", true);
    // upload_files of a URL downloads it when the step runs.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nfetched\n")
            .unwrap();
    });
    let (out, _) = run_tasks(
        &env,
        &format!(r#"{{"url": "http://127.0.0.1:{port}/dir/data.txt?x=1"}}"#),
    );
    server.join().unwrap();
    let fetched = env.home().join("enclaves/t1/artifacts/fetched/data.txt");
    assert_eq!(std::fs::read_to_string(fetched).unwrap(), "fetched\n");
    assert_eq!(out["task"], "hi from the task\n");
    let ip = out["ip"].as_str().unwrap().to_string();
    assert_eq!(out["seen"], format!("made-1\ncfg-1\n{ip}\n1\n"));
    assert_eq!(out["check"], "report\n/etc/passwd\n");
    let enclave_dir = env.home().join("enclaves/t1");
    let report = enclave_dir.join("artifacts/report/report");
    assert_eq!(
        std::fs::read_to_string(report.join("r.txt")).unwrap(),
        "report\n"
    );
    assert!(std::fs::symlink_metadata(report.join("link"))
        .unwrap()
        .is_symlink());
    // No task container is left.
    let containers = env.ctr(&["containers", "ls", "-q"]);
    assert_eq!(containers.lines().count(), 1, "{containers}");

    // Unchanged: kept as it runs (it did not start again), artifacts reused.
    let (out, err) = run_tasks(&env, "{}");
    assert!(err.contains("Service 'web' unchanged: kept"), "{err}");
    assert!(
        err.contains("Files artifact 'cfg' reused (unchanged)"),
        "{err}"
    );
    assert_eq!(out["seen"], format!("made-1\ncfg-1\n{ip}\n1\n"));

    // Removed, then run again: the persistent directory is still there.
    env.ok(&["service", "rm", "t1", "web"]);
    let (out, _) = run_tasks(&env, "{}");
    assert!(out["seen"].as_str().unwrap().ends_with("\n2\n"), "{out}");

    // Changed files: replaced; forced: replaced.
    let (out, err) = run_tasks(&env, r#"{"version": "2"}"#);
    assert!(err.contains("Service 'web' is replaced"), "{err}");
    let ip = out["ip"].as_str().unwrap();
    assert_eq!(out["seen"], format!("made-2\ncfg-2\n{ip}\n3\n"));
    let (out, err) = run_tasks(&env, r#"{"version": "2", "force": true}"#);
    assert!(err.contains("force_update"), "{err}");
    assert!(out["seen"].as_str().unwrap().ends_with("\n4\n"), "{out}");

    // What nixoci cannot honour is refused, naming the service.
    let pkg = env.pkg();
    let o = env.out(&[
        "run",
        pkg.to_str().unwrap(),
        r#"{"gpu": true}"#,
        "--enclave",
        "t1",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("service 'gpu' asks for 1 GPU(s) (GpuConfig)"),
        "{}",
        show(&o)
    );
    let o = env.out(&[
        "run",
        pkg.to_str().unwrap(),
        r#"{"dockerfile": true}"#,
        "--enclave",
        "t1",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("ImageBuildSpec"), "{}", show(&o));

    // privileged, host_pid_namespace, devices and bind_mounts.
    let host_dir = env.tmp.path().join("host-dir");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("mark"), "from the host\n").unwrap();
    let (out, _) = run_tasks(
        &env,
        &format!(r#"{{"host_dir": "{}"}}"#, host_dir.display()),
    );
    let extra = out["extra"].as_str().unwrap();
    let lines: Vec<&str> = extra.lines().collect();
    let caps = u64::from_str_radix(lines[0].split_whitespace().nth(1).unwrap(), 16).unwrap();
    // Every capability this host has (its bounding set).
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = ours
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap();
    assert_eq!(
        caps,
        u64::from_str_radix(bnd.trim(), 16).unwrap(),
        "{extra}"
    );
    assert_eq!(lines[1], "/dev/my-null", "{extra}");
    assert_eq!(lines[2], "from the host", "{extra}");
    assert_eq!(
        std::fs::read_to_string(host_dir.join("back")).unwrap(),
        "ok\n"
    );
    let procs: usize = lines[3].trim().parse().unwrap();
    assert!(procs > 40, "the host's processes are seen: {extra}");
    let o = env.out(&[
        "run",
        pkg.to_str().unwrap(),
        r#"{"host_dir": "/nonexistent-nixoci"}"#,
        "--enclave",
        "t1",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("bind_mounts names /nonexistent-nixoci"),
        "{}",
        show(&o)
    );

    // run_python, with a Python built from this host's files.
    let (out, _) = run_tasks(&env, r#"{"python": true}"#);
    assert_eq!(
        out["py"], "{\"args\": [\"a\", \"b\"], \"sum\": 3}\n",
        "{out}"
    );
    assert_eq!(out["code"], 0);
    let py = env.home().join("enclaves/t1/artifacts/py-out/py.txt");
    assert_eq!(std::fs::read_to_string(py).unwrap(), "from python");
    // Its packages go through pip, which this image lacks: a clear error.
    let o = env.out(&[
        "run",
        pkg.to_str().unwrap(),
        r#"{"python": true, "pip": true}"#,
        "--enclave",
        "t1",
    ]);
    assert!(
        !o.status.success()
            && stderr(&o).contains("installing requests needs pip in the task's image"),
        "{}",
        show(&o)
    );

    // A run killed during a task: the next run removes the task's container.
    let mut slow = env
        .nixoci()
        .args([
            "run",
            pkg.to_str().unwrap(),
            r#"{"slow": true}"#,
            "--enclave",
            "t1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !env.ctr(&["containers", "ls", "-q"]).contains("task-sh") {
        assert!(
            std::time::Instant::now() < deadline,
            "the task never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    slow.kill().unwrap();
    slow.wait().unwrap();
    assert!(env.ctr(&["containers", "ls", "-q"]).contains("task-sh"));
    run_tasks(&env, "{}");
    let left = env.ctr(&["containers", "ls", "-q"]);
    assert!(!left.contains("task-"), "{left}");

    // The files artifacts from the command line.
    let o = env.ok(&["files", "inspect", "t1", "report"]);
    let listing = stdout(&o);
    assert!(
        listing.contains(" report/r.txt") && listing.contains("report/link -> /etc/passwd"),
        "{listing}"
    );
    let dl = env.tmp.path().join("dl");
    env.ok(&["files", "download", "t1", "report", dl.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dl.join("report/r.txt")).unwrap(),
        "report\n"
    );
    let o = env.out(&["files", "download", "t1", "report", dl.to_str().unwrap()]);
    assert!(
        !o.status.success() && stderr(&o).contains("never overwrites"),
        "{}",
        show(&o)
    );
    let o = env.ok(&["files", "upload", "t1", dl.join("report").to_str().unwrap()]);
    let name = stdout(&o).trim().to_string();
    assert_eq!(name, "report-2");
    let o = env.ok(&["files", "inspect", "t1", &name]);
    assert!(stdout(&o).contains(" report/r.txt"), "{}", show(&o));
    let o = env.out(&["files", "inspect", "t1", "nothing"]);
    assert!(!o.status.success() && stderr(&o).contains("no files artifact 'nothing'"));

    // An interactive shell, through a pseudo-terminal.
    let (code, text) = shell_session(
        &env,
        &["service", "shell", "t1", "web"],
        "echo hi-$((1+2)); exit 3\n",
    );
    assert!(text.contains("hi-3"), "{text}");
    assert_eq!(code, Some(3), "{text}");

    // set_service: the service runs on with its new config.
    let (out, err) = run_tasks(&env, r#"{"retarget": true}"#);
    assert_eq!(out["mode"], "set\n", "{err}");

    env.ok(&["enclave", "rm", "-f", "t1"]);
    assert!(!enclave_dir.exists());
}

/// Run nixoci on a new pseudo-terminal, type `keys`, and collect what the
/// terminal shows until nixoci exits; its exit code and the text.
fn shell_session(env: &Env, args: &[&str], keys: &str) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors, checked below.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    // SAFETY: fresh descriptors owned here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = env
        .nixoci()
        .args(args)
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut m = std::fs::File::from(master);
    let mut w = m.try_clone().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    w.write_all(keys.as_bytes()).unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every copy of the terminal's other side is closed.
        while let Ok(n) = m.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let status = child.wait().unwrap();
    drop(w);
    (status.code(), reader.join().unwrap())
}
