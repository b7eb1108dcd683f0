//! End to end: the `sequin` command and the library on real data slices, one module per
//! capability. Each test makes its own temp folder (`TestDir`, removed when it ends).

mod augment;
mod calibrate;
mod config;
mod freeze;
mod long_text;
mod pairs;
mod predict;
mod problem_types;
mod resume;
mod shards;
mod train;
mod tune;
