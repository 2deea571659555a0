mod util;

mod aws;
mod cli;
mod client_examples;
mod client_rotation;
mod clocks;
mod config_rules;
mod hardening;
mod interop;
mod issuers;
mod kms;
mod packaging;
mod readme;
mod rotation;
mod store_file;
mod systemd;
mod token_api;
