//! Machines for tests: network namespaces, each with its own address on one bridge, made and
//! removed by the test itself (root, iproute2). A node of an ensemble laid out on a [`Netns`]
//! runs inside its host's namespace (`ip netns exec`, which also gives it that host's
//! `/etc/netns/<name>/hosts`), and a test's clients run in a host of their own
//! ([`Netns::enter`]); [`Netns::name_hosts`] gives them host names. A partition drops traffic between hosts ([`Netns::cut`]: a blackhole
//! route on each side), whatever the ports and whoever dials.
//!
//! Layout: a switch namespace holds a bridge; every host gets a veth pair whose one end is in the
//! host (`eth0`, address `10.<a>.<b>.<host+1>/24`) and whose other end is a bridge port. The
//! subnet is picked per instance, so that tests running at the same time never share one.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Mutex;

/// A set of hosts (network namespaces) on one bridge; removed on drop.
pub struct Netns {
    /// Prefix of every namespace and interface name of this instance.
    tag: String,
    /// The /24 every host is on: `10.<subnet.0>.<subnet.1>.0`.
    subnet: (u8, u8),
    /// How many hosts.
    hosts: usize,
    /// The directed pairs (from host, to host) whose traffic is dropped now.
    cut: Mutex<BTreeSet<(usize, usize)>>,
}

/// Runs `ip <args>`; an error names the command and what it printed.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Netns {
    /// Makes `hosts` hosts on a fresh bridge. Fails (removing what it made) if the namespaces
    /// cannot be made (not root, no iproute2).
    pub fn create(hosts: usize) -> io::Result<Netns> {
        let pid = std::process::id();
        let tag = format!("sy{:x}", pid ^ (rand_u16() as u32) << 16);
        let subnet = (200 + (pid % 50) as u8, (rand_u16() % 250) as u8 + 1);
        let net = Netns {
            tag,
            subnet,
            hosts,
            cut: Mutex::new(BTreeSet::new()),
        };
        net.build()?;
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.tag)
    }

    /// The namespace name of host `h` (usable with `ip netns exec`).
    pub fn name(&self, h: usize) -> String {
        format!("{}-h{h}", self.tag)
    }

    /// Host `h`'s address.
    pub fn addr(&self, h: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.subnet.0, self.subnet.1, h as u8 + 1))
    }

    fn build(&self) -> io::Result<()> {
        let sw = self.switch();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        for h in 0..self.hosts {
            let ns = self.name(h);
            let (inner, outer) = (format!("{}i{h}", self.tag), format!("{}o{h}", self.tag));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "netns", &sw])?;
            ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
            let cidr = format!("{}/24", self.addr(h));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &sw, "link", "set", &outer, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &outer, "up"])?;
        }
        Ok(())
    }

    /// Gives the hosts names: every host's `/etc/hosts` (as `ip netns exec` shows it, from
    /// `/etc/netns/<name>/hosts`) maps `names[i]` to host `i`'s address, beside `localhost`.
    /// The files go when the hosts do.
    pub fn name_hosts(&self, names: &[&str]) -> io::Result<()> {
        let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        for (h, name) in names.iter().enumerate() {
            hosts.push_str(&format!("{}\t{name}\n", self.addr(h)));
        }
        for h in 0..self.hosts {
            let dir = std::path::Path::new("/etc/netns").join(self.name(h));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("hosts"), &hosts)?;
        }
        Ok(())
    }

    /// Moves the calling thread into host `h`'s namespace: the sockets it opens from then on,
    /// and the threads and processes it starts, are that host's.
    pub fn enter(&self, h: usize) -> io::Result<()> {
        let f = File::open(format!("/var/run/netns/{}", self.name(h)))?;
        // SAFETY: setns(2) with a namespace file descriptor we own, for the calling thread only.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Drops everything between hosts `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) -> io::Result<()> {
        for (from, to) in [(a, b), (b, a)] {
            let newly = self.lock().insert((from, to));
            if newly {
                let dst = format!("{}/32", self.addr(to));
                ip(&["-n", &self.name(from), "route", "add", "blackhole", &dst])?;
            }
        }
        Ok(())
    }

    /// Cuts every host of `a` from every host of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> io::Result<()> {
        for &x in a {
            for &y in b {
                self.cut(x, y)?;
            }
        }
        Ok(())
    }

    /// Restores every cut link.
    pub fn heal(&self) -> io::Result<()> {
        let cut = std::mem::take(&mut *self.lock());
        for (from, to) in cut {
            let dst = format!("{}/32", self.addr(to));
            ip(&["-n", &self.name(from), "route", "del", "blackhole", &dst])?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(usize, usize)>> {
        self.cut.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it (and so their peers).
        for h in 0..self.hosts {
            let _ = ip(&["netns", "del", &self.name(h)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
        for h in 0..self.hosts {
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(self.name(h)));
        }
    }
}

/// A few random bits for names and subnets (from the clock: no dependency for this).
fn rand_u16() -> u16 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u16 ^ (d.as_secs() as u16))
        .unwrap_or(0)
}
