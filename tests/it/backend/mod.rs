//! Backend input: what a backend writes on its connection (TCP or the Unix
//! socket, or through `ms500-relay send`) and what it reads back. Commands
//! reach their topic byte-exact whatever the framing, bad input is refused
//! with a reason, status lines follow ACK_MODE, and connections are served
//! within their limits.

mod connections;
mod framing;
mod mutated_input;
mod send;
mod status_lines;
mod unix_socket;
mod validation;
