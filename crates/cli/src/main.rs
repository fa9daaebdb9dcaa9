mod recfile;
mod spec;
fn main() {}
