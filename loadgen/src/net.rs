//! Client sockets: connect (spreading over 127.0.0.x source addresses when one would run out of
//! ephemeral ports) and count every byte moved on the socket, headers and frames included.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use commbench_servers::counted_io::{CountedIo, IoCounter};
use tokio::net::{TcpSocket, TcpStream};

use crate::record::Recorder;

/// Chooses the local address of each new connection.
#[derive(Debug, Clone)]
pub struct SourceAddrs {
    /// Connections per source address before moving to the next one.
    per_address: usize,
    spread: bool,
    /// Every connection from this address (an agent that stands for one machine).
    fixed: Option<Ipv4Addr>,
}

impl SourceAddrs {
    /// Spreads over 127.0.0.1, .2, … only when the target is on loopback (any 127.x address accepts).
    /// An address takes at most 40% of the port range towards one target: Linux's `connect()` tries
    /// ports of one parity first, so past half the range every new connection searches the used
    /// half first (a 100k ramp stalled for 15 s at 14,100 connections per instance).
    pub fn for_target(target: SocketAddr) -> Self {
        Self {
            per_address: ephemeral_ports() * 2 / 5,
            spread: target.ip().is_loopback() && target.is_ipv4(),
            fixed: None,
        }
    }

    /// Every connection from `ip` (port chosen by the kernel).
    pub fn fixed(ip: Ipv4Addr) -> Self {
        Self {
            per_address: usize::MAX,
            spread: false,
            fixed: Some(ip),
        }
    }

    /// The source address for connection number `index`, or `None` to let the kernel choose.
    pub fn source(&self, index: usize) -> Option<SocketAddr> {
        if let Some(ip) = self.fixed {
            return Some(SocketAddr::new(IpAddr::V4(ip), 0));
        }
        if !self.spread {
            return None;
        }
        // 127.0.0.1 .. 127.0.0.254: up to ~7M connections at the default port range. The first block
        // is left to the kernel: an unbound connect may reuse a port held by a TIME_WAIT socket to
        // another destination, which an explicit bind(…, 0) may not.
        let block = index / self.per_address.max(1);
        if block == 0 {
            return None;
        }
        let host = 1 + block % 254;
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, host as u8)),
            0,
        ))
    }
}

/// The size of the kernel's ephemeral port range (default 28,232 on Linux).
fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<usize>().ok());
            let (low, high) = (parts.next()??, parts.next()??);
            high.checked_sub(low).map(|n| n + 1)
        })
        .unwrap_or(28_232)
}

/// A connect that takes longer than this fails (an overflowing accept queue drops SYNs, and the
/// kernel would otherwise retry for minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a TCP connection from `source` (when given) with Nagle disabled, within [`CONNECT_TIMEOUT`].
pub async fn connect(target: SocketAddr, source: Option<SocketAddr>) -> io::Result<TcpStream> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_now(target, source))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

async fn connect_now(target: SocketAddr, source: Option<SocketAddr>) -> io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(target).await?,
        Some(source) => {
            let socket = if target.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            // Only the address: the port is chosen at connect(), unique per 4-tuple as for an
            // unbound socket, instead of reserved by bind() across every destination (which made
            // a spread ramp stall).
            #[cfg(target_os = "linux")]
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::IpBindAddressNoPort,
                &true,
            )
            .map_err(io::Error::from)?;
            socket.bind(source)?;
            socket.connect(target).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The client side of [`CountedIo`]: bytes and connections go to the run's counters.
pub struct ClientCounter(Arc<Recorder>);

impl IoCounter for ClientCounter {
    fn read(&self, bytes: usize) {
        self.0.counters.bytes_down.fetch_add(bytes as u64, Relaxed);
    }
    fn wrote(&self, bytes: usize) {
        self.0.counters.bytes_up.fetch_add(bytes as u64, Relaxed);
    }
    fn closed(&self) {
        self.0.counters.connection_closed();
    }
}

/// A client connection whose bytes count toward the run.
pub type CountedStream = CountedIo<TcpStream, ClientCounter>;

/// Wraps a connected stream, counting it as opened now.
pub fn counted(stream: TcpStream, recorder: &Arc<Recorder>) -> CountedStream {
    recorder.counters.connection_opened();
    CountedIo::new(stream, ClientCounter(recorder.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_only_on_loopback() {
        let local = SourceAddrs {
            per_address: 2,
            spread: true,
            fixed: None,
        };
        let hosts: Vec<_> = (0..6)
            .map(|i| local.source(i).map(|a| a.ip().to_string()))
            .collect();
        assert_eq!(hosts[0], None);
        assert_eq!(hosts[2].as_deref(), Some("127.0.0.2"));
        assert_eq!(hosts[5].as_deref(), Some("127.0.0.3"));
        let remote = SourceAddrs::for_target("10.0.0.1:80".parse().unwrap());
        assert!(remote.source(0).is_none());
        assert!(ephemeral_ports() > 1000);
        let agent = SourceAddrs::fixed(Ipv4Addr::new(127, 0, 0, 12));
        assert_eq!(agent.source(70_000).unwrap().to_string(), "127.0.0.12:0");
    }

    #[test]
    fn an_address_stays_below_half_the_port_range() {
        let local = SourceAddrs::for_target("127.0.0.1:80".parse().unwrap());
        assert!(local.per_address * 2 < ephemeral_ports());
        assert!(local.source(local.per_address - 1).is_none());
        assert_eq!(
            local.source(local.per_address).unwrap().ip().to_string(),
            "127.0.0.2"
        );
    }

    #[tokio::test]
    async fn a_spread_connection_binds_its_address_but_not_its_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let source = SocketAddr::from(([127, 0, 0, 2], 0));
        let stream = connect(target, Some(source)).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.2");
        assert_eq!(stream.local_addr().unwrap(), peer);
        let no_port =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::IpBindAddressNoPort)
                .unwrap();
        assert!(no_port, "bind() must leave the port to connect()");
    }
}
