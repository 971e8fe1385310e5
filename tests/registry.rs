//! Registries: push (build output and `nixoci push`), pull, credentials and
//! token auth, against Debian's docker-registry started by the tests.

mod common;

use common::{run, show, Containerd, Fixture, Registry};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;

fn json_out(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", show(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(o)))
}

/// The registry output's report of a `build --json`.
fn push_report(v: &serde_json::Value) -> serde_json::Value {
    v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["sink"].as_str().unwrap_or("").starts_with("registry:"))
        .cloned()
        .unwrap_or_else(|| panic!("no registry output in {v}"))
}

fn skopeo_digest(reference: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ])))
    .unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

#[test]
fn push_skips_what_the_registry_has_mounts_across_repositories_and_round_trips() {
    let reg = Registry::start("");
    let fx = Fixture::flake("hello");
    let dir = fx.dir();
    let d = dir.to_str().unwrap();
    let target = format!("{}/team/hello:1", reg.addr());
    let layout = fx.out("layout");
    let first = json_out(
        &fx.nixoci()
            .args(["build", d, "--insecure", "--json", "--output"])
            .arg(format!("registry:{target}"))
            .arg("--output")
            .arg(format!("oci:{}", layout.display()))
            .output()
            .unwrap(),
    );
    let r = push_report(&first);
    let digest = first["manifest"]["digest"].as_str().unwrap().to_string();
    assert_eq!(r["manifest_digest"], digest.as_str(), "{first}");
    assert_eq!(r["reference"], target.as_str());
    assert!(r["blobs_uploaded"].as_u64().unwrap() >= 3, "{r}");
    // An independent client sees the same image, and copies it back whole.
    assert_eq!(skopeo_digest(&target), digest);
    let back = fx.out("back");
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{target}"),
        &format!("oci:{}:t", back.display()),
    ]));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    // What the registry holds re-hashes whole.
    let v = fx
        .nixoci()
        .args([
            "verify",
            &format!("registry:{target}"),
            "--insecure",
            "--json",
        ])
        .output()
        .unwrap();
    let v = json_out(&v);
    assert!(v["blobs"].as_u64().unwrap() >= 3, "{v}");

    // Again: nothing is uploaded, each blob costs a HEAD.
    let again = push_report(&json_out(
        &fx.nixoci()
            .args(["build", d, "--insecure", "--json", "--output"])
            .arg(format!("registry:{target}"))
            .output()
            .unwrap(),
    ));
    assert_eq!(again["blobs_uploaded"], 0, "{again}");
    assert_eq!(again["bytes_written"], 0, "{again}");

    // Another repository of the same registry: blobs are mounted, and the
    // tag comes from --tag when REF has none.
    let other = json_out(
        &fx.nixoci()
            .args([
                "build",
                d,
                "--insecure",
                "--json",
                "--tag",
                "hello:7",
                "--output",
            ])
            .arg(format!("registry:{}/elsewhere/hello", reg.addr()))
            .output()
            .unwrap(),
    );
    let o = push_report(&other);
    assert_eq!(o["blobs_uploaded"], 0, "{o}");
    assert!(o["blobs_mounted"].as_u64().unwrap() >= 3, "{o}");
    assert_eq!(
        skopeo_digest(&format!("{}/elsewhere/hello:7", reg.addr())),
        digest
    );

    // nixoci push of the OCI layout to a third repository.
    let pushed = fx
        .nixoci()
        .args(["push", "--insecure", "--json"])
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("{}/pushed/hello:2", reg.addr()))
        .output()
        .unwrap();
    let p = json_out(&pushed);
    assert_eq!(p["manifest_digest"], digest.as_str(), "{p}");
    assert_eq!(
        skopeo_digest(&format!("{}/pushed/hello:2", reg.addr())),
        digest
    );

    // Plain HTTP only when asked.
    let refused = fx
        .nixoci()
        .args(["push"])
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("{}/x/y:1", reg.addr()))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--insecure"),
        "{}",
        show(&refused)
    );
}

#[test]
fn pull_an_image_skopeo_pushed_then_run_it() {
    let reg = Registry::start("");
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    let layout = fx.out("layout");
    fx.build_ok(&[
        fx.dir().to_str().unwrap(),
        "--output",
        &format!("oci:{}", layout.display()),
        "--tag",
        "hello:1",
    ]);
    let target = format!("{}/by/skopeo:1", reg.addr());
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{target}"),
    ]));
    let o = fx
        .nixoci()
        .args([
            "pull",
            "--insecure",
            "--json",
            "--containerd-address",
            &cd.socket(),
            &target,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    // Every layer extracted by nixoci as it arrived (containerd applies
    // none; `layers_extracted_as_they_arrive_match_diff_apply` compares
    // the two).
    let pulled = json_out(&o);
    let unpack = &pulled["containerd"]["unpack"];
    assert!(unpack["extracted"].as_u64().unwrap() > 0, "{pulled}");
    assert_eq!(unpack["applied"], 0, "{pulled}");
    let out = cd.run_image("default", &target, &[]);
    assert_eq!(out, "hello from nix\n");
    // And from containerd to another repository: the same manifest.
    let o = fx
        .nixoci()
        .args([
            "push",
            "--insecure",
            "--json",
            "--containerd-address",
            &cd.socket(),
        ])
        .arg(format!("containerd:{target}"))
        .arg(format!("{}/from/containerd:1", reg.addr()))
        .output()
        .unwrap();
    let p = json_out(&o);
    assert_eq!(
        skopeo_digest(&format!("{}/from/containerd:1", reg.addr())),
        skopeo_digest(&target)
    );
    assert_eq!(
        p["manifest_digest"].as_str().unwrap(),
        skopeo_digest(&target)
    );
    // A missing tag is a clear error.
    let o = fx
        .nixoci()
        .args(["pull", "--insecure", "--containerd-address", &cd.socket()])
        .arg(format!("{}/by/skopeo:nope", reg.addr()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("MANIFEST_UNKNOWN"),
        "{}",
        show(&o)
    );
}

fn docker_config(dir: &Path, registry: &str, user: &str, pass: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let auth = run(Command::new("sh").args(["-c", &format!("printf %s '{user}:{pass}' | base64")]));
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"auths": {{"{registry}": {{"auth": "{}"}}}}}}"#,
            auth.trim()
        ),
    )
    .unwrap();
}

#[test]
fn basic_auth_with_good_and_bad_credentials_and_a_credential_helper() {
    let tmp = tempfile::tempdir().unwrap();
    let htpasswd = tmp.path().join("htpasswd");
    let out = run(Command::new("htpasswd").args(["-Bbn", "tester", "s3cret-pass"]));
    std::fs::write(&htpasswd, out).unwrap();
    let reg = Registry::start(&format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        htpasswd.display()
    ));
    let fx = Fixture::flake("hello");
    let layout = fx.out("layout");
    fx.build_ok(&[
        fx.dir().to_str().unwrap(),
        "--output",
        &format!("oci:{}", layout.display()),
    ]);
    let push = |config: &Path| {
        fx.nixoci()
            .env("DOCKER_CONFIG", config)
            .args(["push", "--insecure"])
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("{}/auth/hello:1", reg.addr()))
            .output()
            .unwrap()
    };
    let good = tmp.path().join("good");
    docker_config(&good, &reg.addr(), "tester", "s3cret-pass");
    let o = push(&good);
    assert!(o.status.success(), "{}", show(&o));

    let bad = tmp.path().join("bad");
    docker_config(&bad, &reg.addr(), "tester", "wrong-pass");
    let o = push(&bad);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refused the credentials of user 'tester'"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-pass") && !err.contains("s3cret"),
        "{err}"
    );

    let none = tmp.path().join("none");
    std::fs::create_dir_all(&none).unwrap();
    let o = push(&none);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("none were found"),
        "{}",
        show(&o)
    );

    // credHelpers: docker-credential-<name> get, on PATH.
    let helper_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let helper = helper_dir.join("docker-credential-nixocitest");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\necho \"{\\\"ServerURL\\\": \\\"$server\\\", \\\"Username\\\": \\\"tester\\\", \\\"Secret\\\": \\\"s3cret-pass\\\"}\"\n",
    )
    .unwrap();
    run(Command::new("chmod").args(["755", helper.to_str().unwrap()]));
    let helped = tmp.path().join("helped");
    std::fs::create_dir_all(&helped).unwrap();
    std::fs::write(
        helped.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "nixocitest"}}}}"#, reg.addr()),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helper_dir.display(),
        std::env::var("PATH").unwrap()
    );
    let o = fx
        .nixoci()
        .env("DOCKER_CONFIG", &helped)
        .env("PATH", path)
        .args(["push", "--insecure"])
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("{}/helped/hello:1", reg.addr()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
}

/// A token issuer for the registry's `auth: token`: checks basic
/// credentials, signs a JWT (RS256, the certificate in `x5c`) with openssl.
fn token_server(key: &Path, cert_der_b64: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let key = key.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut authorized = false;
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).unwrap() == 0 || l == "\r\n" {
                    break;
                }
                // tester:s3cret-pass
                if l.to_ascii_lowercase()
                    .starts_with("authorization: basic dgvzdgvyonmzy3jldc1wyxnz")
                {
                    authorized = true;
                }
            }
            if !authorized {
                let _ = conn.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let query = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let mut access = Vec::new();
            for part in query.split(['?', '&']) {
                if let Some(scope) = part.strip_prefix("scope=") {
                    let scope = scope
                        .replace("%3A", ":")
                        .replace("%2C", ",")
                        .replace("%2F", "/");
                    let f: Vec<&str> = scope.split(':').collect();
                    if f.len() == 3 {
                        access.push(serde_json::json!({"type": f[0], "name": f[1], "actions": f[2].split(',').collect::<Vec<_>>()}));
                    }
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let b64 = |b: &[u8]| {
                let s = run(Command::new("sh")
                    .arg("-c")
                    .arg("base64 -w0 | tr '+/' '-_' | tr -d '='")
                    .stdin_bytes(b));
                s.trim().to_string()
            };
            let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [cert_der_b64]});
            let claims = serde_json::json!({
                "iss": "nixoci-test-issuer", "sub": "tester", "aud": "nixoci-test-registry",
                "exp": now + 600, "nbf": now - 60, "iat": now, "jti": format!("{now}-{}", access.len()),
                "access": access,
            });
            let signing_input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let sig = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key)
                .stdin_bytes_output(signing_input.as_bytes());
            let token = format!("{signing_input}.{}", b64(&sig));
            let body = serde_json::json!({"token": token, "expires_in": 600}).to_string();
            let _ = conn.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
            );
        }
    });
    port
}

trait StdinBytes {
    fn stdin_bytes(&mut self, b: &[u8]) -> &mut Self;
    fn stdin_bytes_output(&mut self, b: &[u8]) -> Vec<u8>;
}

impl StdinBytes for Command {
    /// Feed `b` on stdin (through a temp file, so `run` can be used).
    fn stdin_bytes(&mut self, b: &[u8]) -> &mut Self {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b).unwrap();
        self.stdin(std::fs::File::open(f.path()).unwrap())
    }

    fn stdin_bytes_output(&mut self, b: &[u8]) -> Vec<u8> {
        let o = self.stdin_bytes(b).output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
        o.stdout
    }
}

#[test]
fn token_auth_through_a_token_issuer() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key.pem");
    let cert = tmp.path().join("cert.pem");
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=nixoci-test-issuer",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]));
    let der = run(Command::new("sh").arg("-c").arg(format!(
        "openssl x509 -in {} -outform DER | base64 -w0",
        cert.display()
    )));
    let port = token_server(&key, der.trim().to_string());
    let reg = Registry::start(&format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    service: nixoci-test-registry\n    issuer: nixoci-test-issuer\n    rootcertbundle: {}\n",
        cert.display()
    ));
    let fx = Fixture::flake("hello");
    let layout = fx.out("layout");
    fx.build_ok(&[
        fx.dir().to_str().unwrap(),
        "--output",
        &format!("oci:{}", layout.display()),
    ]);
    let config = tmp.path().join("docker");
    docker_config(&config, &reg.addr(), "tester", "s3cret-pass");
    let target = format!("{}/tok/hello:1", reg.addr());
    let o = fx
        .nixoci()
        .env("DOCKER_CONFIG", &config)
        .args(["push", "--insecure", "--json"])
        .arg(format!("oci:{}", layout.display()))
        .arg(&target)
        .output()
        .unwrap();
    let p = json_out(&o);
    assert!(p["blobs_uploaded"].as_u64().unwrap() >= 3, "{p}");
    // Pull it back with the token flow too.
    let cd = Containerd::start();
    let o = fx
        .nixoci()
        .env("DOCKER_CONFIG", &config)
        .args([
            "pull",
            "--insecure",
            "--containerd-address",
            &cd.socket(),
            &target,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    // Bad credentials: the issuer refuses, the error says so.
    let bad = tmp.path().join("bad");
    docker_config(&bad, &reg.addr(), "tester", "nope");
    let o = fx
        .nixoci()
        .env("DOCKER_CONFIG", &bad)
        .args(["push", "--insecure"])
        .arg(format!("oci:{}", layout.display()))
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refused the credentials"),
        "{}",
        show(&o)
    );
}

#[test]
fn a_registry_stopped_mid_push_is_a_clear_error_and_a_retry_succeeds() {
    let mut reg = Registry::start("");
    let fx = Fixture::flake("big");
    let dir = fx.dir();
    let target = format!("{}/big/random:1", reg.addr());
    let child = fx
        .nixoci()
        .args([
            "build",
            dir.to_str().unwrap(),
            "--insecure",
            "--compression",
            "none",
            "--output",
        ])
        .arg(format!("registry:{target}"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stop the registry once an upload is under way.
    let uploads = reg
        .dir
        .path()
        .join("data/docker/registry/v2/repositories/big/random/_uploads");
    let start = std::time::Instant::now();
    while !uploads.is_dir() || std::fs::read_dir(&uploads).unwrap().count() == 0 {
        assert!(start.elapsed().as_secs() < 120, "no upload started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    reg.stop();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is the registry running and reachable?"),
        "{err}"
    );
    reg.restart();
    let o = fx
        .nixoci()
        .args([
            "build",
            dir.to_str().unwrap(),
            "--insecure",
            "--compression",
            "none",
            "--output",
        ])
        .arg(format!("registry:{target}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(!skopeo_digest(&target).is_empty());
}

#[test]
fn tls_registry_with_a_private_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).display().to_string();
    // A CA, and a certificate for 127.0.0.1 that it signs.
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=nixoci test CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]));
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("srv.key"),
        "-out",
        &p("srv.csr"),
    ]));
    std::fs::write(
        tmp.path().join("ext.cnf"),
        "subjectAltName = IP:127.0.0.1\n",
    )
    .unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("srv.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("srv.pem"),
    ]));
    let reg = Registry::start(&format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        p("srv.pem"),
        p("srv.key")
    ));
    let fx = Fixture::flake("hello");
    let layout = fx.out("layout");
    fx.build_ok(&[
        fx.dir().to_str().unwrap(),
        "--output",
        &format!("oci:{}", layout.display()),
    ]);
    let push = |extra: &[&str]| {
        fx.nixoci()
            .arg("push")
            .args(extra)
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("{}/tls/hello:1", reg.addr()))
            .output()
            .unwrap()
    };
    let untrusted = push(&[]);
    assert_eq!(untrusted.status.code(), Some(1), "{}", show(&untrusted));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("--ca-file"),
        "{}",
        show(&untrusted)
    );
    let trusted = push(&["--ca-file", &p("ca.pem")]);
    assert!(trusted.status.success(), "{}", show(&trusted));
}

/// A registry that serves other bytes than the digest names (here: its
/// storage tampered with, as a compromised registry or a man in the middle
/// would): `nixoci pull` by digest refuses the manifest, naming the digest
/// expected and the one found, and leaves no image, and a swapped layer is
/// refused before it is committed.
#[test]
fn a_registry_serving_other_bytes_is_refused() {
    let reg = Registry::start("");
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    let target = format!("{}/swap/hello:1", reg.addr());
    let built = json_out(
        &fx.nixoci()
            .args([
                "build",
                fx.dir().to_str().unwrap(),
                "--insecure",
                "--json",
                "--output",
            ])
            .arg(format!("registry:{target}"))
            .output()
            .unwrap(),
    );
    let digest = built["manifest"]["digest"].as_str().unwrap().to_string();
    let blob_data = |d: &str| {
        let hex = d.trim_start_matches("sha256:");
        reg.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    };
    let pull = |reference: &str| {
        fx.nixoci()
            .args([
                "pull",
                reference,
                "--insecure",
                "--namespace",
                "swap",
                "--containerd-address",
            ])
            .arg(cd.socket())
            .env("NIXOCI_HOME", fx.out("home"))
            .output()
            .unwrap()
    };
    // The manifest swapped for other bytes (the same JSON with a space
    // added: a registry serves it as valid).
    let manifest_file = blob_data(&digest);
    let original = std::fs::read(&manifest_file).unwrap();
    let mut swapped = original.clone();
    swapped.push(b' ');
    std::fs::write(&manifest_file, &swapped).unwrap();
    let by_digest = format!("{}/swap/hello@{digest}", reg.addr());
    let o = pull(&by_digest);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&digest) && err.contains("corrupted or replaced"),
        "{err}"
    );
    assert_eq!(run(cd.ctr("swap").args(["images", "ls", "-q"])).trim(), "");
    std::fs::write(&manifest_file, &original).unwrap();

    // A layer swapped: refused before containerd commits it.
    let layer = built["layers"][0]["blob"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let layer_file = blob_data(&layer);
    let mut bytes = std::fs::read(&layer_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&layer_file, &bytes).unwrap();
    let o = pull(&target);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&layer), "{err}");
    assert_eq!(run(cd.ctr("swap").args(["images", "ls", "-q"])).trim(), "");
    let content = run(cd.ctr("swap").args(["content", "ls", "-q"]));
    assert!(
        !content.contains(&layer),
        "the swapped layer was committed: {content}"
    );
}

/// SIGKILL of `nixoci push` while a blob upload is open (proven at the
/// moment of each kill): the registry never gets the tag of a partial
/// image, the next push succeeds, and the pushed image verifies whole.
#[test]
fn sigkill_mid_push_then_the_next_push_succeeds_and_verifies() {
    let reg = Registry::start("");
    let fx = Fixture::flake("big");
    let layout = fx.out("layout");
    fx.build_ok(&[
        fx.dir().to_str().unwrap(),
        "--compression",
        "none",
        "--output",
        &format!("oci:{}", layout.display()),
    ]);
    let target = format!("{}/kill/push:1", reg.addr());
    let uploads = reg
        .dir
        .path()
        .join("data/docker/registry/v2/repositories/kill/push/_uploads");
    let open_uploads = || std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    let mut proven = 0;
    for delay_ms in [0u64, 30, 100] {
        // Sessions a killed push left open stay listed: count new ones.
        let before = open_uploads();
        let mut child = fx
            .nixoci()
            .args([
                "push",
                &format!("oci:{}", layout.display()),
                &target,
                "--insecure",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while open_uploads() <= before {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the push ended before an upload opened"
            );
            assert!(start.elapsed().as_secs() < 60, "no upload started");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if open_uploads() > before && child.try_wait().unwrap().is_none() {
            proven += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // No tag points at a partial image.
        let tags = Command::new("skopeo")
            .args([
                "list-tags",
                "--tls-verify=false",
                &format!("docker://{}/kill/push", reg.addr()),
            ])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&tags.stdout).contains("\"1\""),
            "tagged after a kill"
        );
    }
    assert!(
        proven >= 2,
        "only {proven} of 3 kills landed during an upload"
    );
    let o = fx
        .nixoci()
        .args([
            "push",
            &format!("oci:{}", layout.display()),
            &target,
            "--insecure",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let v = fx
        .nixoci()
        .args(["verify", &format!("registry:{target}"), "--insecure"])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", show(&v));
}
