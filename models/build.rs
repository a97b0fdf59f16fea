// Embed an rpath to libtorch so test binaries run without LD_LIBRARY_PATH (see DESIGN.md).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
        let version = std::fs::read_to_string(format!("{dir}/build-version")).unwrap_or_default();
        println!("cargo:rustc-env=VCNODE_LIBTORCH_VERSION={}", version.trim());
    } else {
        println!("cargo:rustc-env=VCNODE_LIBTORCH_VERSION=");
    }
}
