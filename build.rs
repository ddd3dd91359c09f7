// Refinery embeds migrations/ at compile time but only tracks edits to files it already knows;
// a new migration file must rebuild the binary too.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
