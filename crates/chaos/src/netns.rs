//! Network namespaces for a chaos run: one per node plus one holding a bridge, joined by veth
//! pairs, and nftables rules on the bridge that cut links.
//!
//! Node `i` lives in namespace `{prefix}-n{i+1}` with address `10.77.0.{i+1}/24` on its veth; the
//! other end of each veth is a port of bridge `br0` in `{prefix}-br`. The addresses exist only
//! inside these namespaces — the host has no route to them, and nothing here sends traffic to them
//! from the host. Cuts are `bridge`-family nftables rules in the bridge namespace (its own ruleset:
//! the host's firewall is never touched). Dropping the [`Network`] deletes every namespace it made.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Prefix of every namespace a chaos run creates; a run's own prefix adds its process id.
pub const NAMESPACE_PREFIX: &str = "concord-chaos";

/// Runs `program args` and returns its stdout, or an error naming the command and its stderr.
pub fn run_command(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().map_err(|error| format!("cannot run {program}: {error}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).map_err(|error| format!("writing to {program}: {error}"))?;
    }
    let output = child.wait_with_output().map_err(|error| format!("waiting for {program}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Deletes namespaces left by earlier runs whose process is gone (a run killed with SIGKILL cannot
/// clean up after itself). Returns the names deleted.
pub fn delete_stale_namespaces() -> Vec<String> {
    let Ok(list) = run_command("ip", &["netns", "list"], None) else { return Vec::new() };
    let mut deleted = Vec::new();
    for name in list.lines().filter_map(|line| line.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NAMESPACE_PREFIX).and_then(|rest| rest.strip_prefix('-')) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|pid| pid.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run_command("ip", &["netns", "del", name], None);
            deleted.push(name.to_owned());
        }
    }
    deleted
}

/// The namespaces of one run; deleted on drop.
#[derive(Debug)]
pub struct Network {
    prefix: String,
    nodes: usize,
    created: Vec<String>,
}

impl Network {
    /// Creates the bridge namespace and one namespace per node, wired and up.
    pub fn create(nodes: usize) -> Result<Network, String> {
        assert!((1..=250).contains(&nodes));
        let prefix = format!("{NAMESPACE_PREFIX}-{}", std::process::id());
        let mut network = Network { prefix, nodes, created: Vec::new() };
        let bridge = network.bridge_namespace();
        network.add_namespace(&bridge)?;
        run_command("ip", &["-n", &bridge, "link", "add", "br0", "type", "bridge"], None)?;
        run_command("ip", &["-n", &bridge, "link", "set", "br0", "up"], None)?;
        run_command("ip", &["-n", &bridge, "link", "set", "lo", "up"], None)?;
        for node in 0..nodes {
            let namespace = network.node_namespace(node);
            network.add_namespace(&namespace)?;
            let port = format!("p{}", node + 1);
            run_command(
                "ip",
                &[
                    "link", "add", "chaos0", "netns", &namespace, "type", "veth", "peer", "name", &port,
                    "netns", &bridge,
                ],
                None,
            )?;
            let address = format!("{}/24", Network::address(node));
            run_command("ip", &["-n", &namespace, "addr", "add", &address, "dev", "chaos0"], None)?;
            run_command("ip", &["-n", &namespace, "link", "set", "chaos0", "up"], None)?;
            run_command("ip", &["-n", &namespace, "link", "set", "lo", "up"], None)?;
            run_command("ip", &["-n", &bridge, "link", "set", &port, "master", "br0"], None)?;
            run_command("ip", &["-n", &bridge, "link", "set", &port, "up"], None)?;
        }
        network.set_cuts(&[])?;
        Ok(network)
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        run_command("ip", &["netns", "add", name], None)?;
        self.created.push(name.to_owned());
        Ok(())
    }

    /// The namespace holding the bridge.
    pub fn bridge_namespace(&self) -> String {
        format!("{}-br", self.prefix)
    }

    /// Node `node`'s namespace.
    pub fn node_namespace(&self, node: usize) -> String {
        format!("{}-n{}", self.prefix, node + 1)
    }

    /// Node `node`'s address (inside the namespaces only).
    pub fn address(node: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, node as u8 + 1)
    }

    /// A command that runs `program` inside node `node`'s namespace.
    pub fn command_in(&self, node: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.node_namespace(node), program]);
        command
    }

    /// Replaces the bridge's rules: packets on each directed link `(from, to)` are dropped, all
    /// other traffic passes. Atomic (one `nft -f` transaction).
    pub fn set_cuts(&self, cuts: &[(usize, usize)]) -> Result<(), String> {
        let mut rules = String::from("flush ruleset\ntable bridge concord_chaos {\n  chain forward {\n");
        rules.push_str("    type filter hook forward priority 0; policy accept;\n");
        for &(from, to) in cuts {
            assert!(from < self.nodes && to < self.nodes);
            rules.push_str(&format!(
                "    ip saddr {} ip daddr {} drop\n",
                Network::address(from),
                Network::address(to)
            ));
        }
        rules.push_str("  }\n}\n");
        run_command("ip", &["netns", "exec", &self.bridge_namespace(), "nft", "-f", "-"], Some(&rules))
            .map(|_| ())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            if let Err(error) = run_command("ip", &["netns", "del", name], None) {
                eprintln!("chaos: cleanup: {error}");
            }
        }
    }
}
