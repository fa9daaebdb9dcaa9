mod spec;
fn main() {}
