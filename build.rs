// Integration tests against PostgreSQL run only when TEST_POSTGRES_URL names a server;
// otherwise they are compiled as `#[ignore]`d, so `cargo test` lists them as not run.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo::rerun-if-env-changed=TEST_POSTGRES_URL");
    if std::env::var("TEST_POSTGRES_URL").is_ok_and(|v| !v.trim().is_empty()) {
        println!("cargo::rustc-cfg=postgres_tests");
    }
}
