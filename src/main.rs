mod command;
mod config;
mod frame;

fn main() {}
