// Embed an rpath to libtorch so `vcnode` and its tests run without LD_LIBRARY_PATH (DESIGN.md).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
}
