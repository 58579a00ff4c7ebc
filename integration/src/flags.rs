//! `--name value` command-line flags of the crate's helper programs.

use std::collections::HashMap;
use std::str::FromStr;

/// `--name value` pairs, parsed on demand into the type each flag needs.
#[derive(Debug)]
pub struct Flags(HashMap<String, String>);

impl Flags {
    /// Parses `--name value` pairs; anything else is an error naming the offending argument.
    pub fn parse(args: &[String]) -> Result<Flags, String> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --flag, got {flag:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            map.insert(name.to_owned(), value.clone());
        }
        Ok(Flags(map))
    }

    /// The value of a required flag.
    pub fn get<T: FromStr>(&self, name: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let value = self
            .0
            .get(name)
            .ok_or_else(|| format!("missing --{name}"))?;
        value
            .parse()
            .map_err(|e| format!("--{name} {value:?}: {e}"))
    }

    /// The value of an optional flag, `default` when absent.
    pub fn get_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        if self.0.contains_key(name) {
            self.get(name)
        } else {
            Ok(default)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_pairs_and_reports_what_is_wrong() {
        let f = Flags::parse(&args(&["--count", "7", "--to", "192.0.2.2:80"])).unwrap();
        assert_eq!(f.get::<u32>("count"), Ok(7));
        assert_eq!(f.get_or::<u32>("rounds", 3), Ok(3));
        assert_eq!(f.get::<u32>("missing"), Err("missing --missing".into()));
        assert!(f.get::<u8>("to").unwrap_err().contains("192.0.2.2:80"));
        assert!(Flags::parse(&args(&["count"])).is_err());
        assert!(Flags::parse(&args(&["--count"])).is_err());
    }
}
