//! Installs the default table in the current network namespace, prints it as `nft` lists it and
//! removes it again. Run it in a scratch namespace: `unshare -n cargo run --example show_ruleset`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rs = nft_rules::Ruleset::install(&nft_rules::Config::default())?;
    println!("# queue mode: {:?}", rs.mode());
    let out = std::process::Command::new("nft")
        .args(["list", "table", "inet", "rackd"])
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    rs.remove()?;
    Ok(())
}
