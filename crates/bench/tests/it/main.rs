//! The fault suite's short version, which CI runs: small runs through the
//! real `gauntlet serve` processes, one fault each, judged as a user would
//! judge them. The full version is `gauntlet-bench fault`.

mod fault;
