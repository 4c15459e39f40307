//! A blocking driver, as firmware would write it: no async runtime, no threads, one
//! `std::net::UdpSocket`, one main loop and one timer. It drives seed 000's appliance
//! (`offload::Appliance`, the weak device of the seed, which builds without `std`): the
//! same appliance, options and behaviour as `offload appliance` (both include
//! `driver/appliance.rs`); only the loop differs. Run it in place of `offload appliance`
//! next to `offload proxy` and `offload remote` (`README.md`, "Running on real sockets").
//!
//! # The contract this loop shows (`src/io.rs`)
//!
//! ```text
//! loop {
//!     1. drain: while let Some(out) = actor.poll_output() { carry it out }
//!              Transmit → socket.send_to; Event → the application (which may give
//!              commands: their outputs are drained by this same loop)
//!     2. arm:   deadline = actor.poll_timeout()  — asked last, after the drain
//!              passed already  → actor.handle_timeout(now), back to 1 (no read)
//!              in d            → socket.set_read_timeout(Some(d))
//!              None            → socket.set_read_timeout(None): sleep until a datagram
//!     3. wait:  socket.recv_from()
//!              a datagram      → actor.handle_input(now, Input::Datagram { .. })
//!              WouldBlock/TimedOut (the read timeout is the timer) → actor.handle_timeout(now)
//! }
//! ```
//!
//! - **One timer.** The read timeout *is* the timer: the actor names one deadline, the
//!   loop sleeps in `recv_from` until then or until a datagram, whichever comes first. A
//!   datagram that arrives just before the deadline is handled first, and the timeout
//!   then follows on the next pass (step 2 finds it passed); actors tolerate early, late
//!   and spurious `handle_timeout` calls, so no bookkeeping of "did it fire" is needed.
//! - **Time is read, never kept.** `now` is read from the monotonic clock at each call
//!   into the actor (`Clock::now`, nanoseconds since the loop started), so a slow pass
//!   makes the next deadline due at once instead of drifting.
//! - **Nothing blocks but the read.** A UDP `send_to` does not wait for the peer; errors
//!   are logged and the datagram treated as lost, which the appliance's link
//!   retransmissions cover.
//! - **Refused input is not fatal.** `handle_input` refuses bad datagrams with a typed
//!   error and stays usable; the loop logs it and reads the next one.
//! - **Datagrams only.** The appliance never opens streams (it cannot run a handshake:
//!   that is the proxy's job), so a stream output is a bug worth logging, never a reason
//!   to stop.

// Only part of the shared driver code: none of its async half.
#[allow(dead_code)] // the tokio examples use the rest of these files
#[path = "driver/appliance.rs"]
mod appliance;
#[allow(dead_code)]
#[path = "driver/common.rs"]
mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;

use deputy::offload::Appliance;
use deputy::{Actor, Input, Instant, Output};

use common::{Args, Clock, DriverError, bind_udp, finish, log, rng, warn};

const WHO: &str = "appliance";

const USAGE: &str = "\
blocking: seed 000's appliance driven by one blocking socket (no async)

Usage: blocking [options]

Options:
APPLIANCE_OPTIONS
  -h, --help            this text

Logs every event on stdout; runs until killed.";

/// The largest datagram read (the appliance refuses anything over 4,096 bytes itself,
/// with a typed error; reading it whole lets it).
const MAX_DATAGRAM: usize = 65_535;

fn main() -> ExitCode {
    finish(WHO, run())
}

fn run() -> Result<u8, DriverError> {
    let usage: &'static str = USAGE
        .replace("APPLIANCE_OPTIONS", appliance::OPTIONS)
        .leak();
    let mut args = Args::from_env(usage)?;
    let (cfg, mut behaviour) = appliance::from_args(&mut args)?;
    args.finish()?;

    let (socket, local) = bind_udp(cfg.local)?;
    let clock = Clock::start();
    let mut actor = Appliance::new(cfg, rng()?);
    log(&clock, WHO, format!("{local}: running (blocking loop)"));
    let now = clock.now();
    behaviour
        .start(&mut actor, now)
        .map_err(DriverError::deputy("flow B request"))?;
    drive((&socket, local), &mut actor, &clock, |a, now, event| {
        if let Some(note) = behaviour.on_event(a, now, event) {
            log(&clock, WHO, note);
        }
    })
}

/// The loop of the header comment, for any actor that speaks datagrams only. Returns only
/// when the socket cannot be used any more.
fn drive<A: Actor>(
    (socket, local): (&UdpSocket, SocketAddr),
    actor: &mut A,
    clock: &Clock,
    mut on_event: impl FnMut(&mut A, Instant, A::Event),
) -> Result<u8, DriverError>
where
    A::Event: std::fmt::Debug,
{
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // 1. Drain.
        while let Some(output) = actor.poll_output() {
            match output {
                Output::Transmit(t) if t.from == local => {
                    if let Err(e) = socket.send_to(&t.data, t.to) {
                        warn(clock, WHO, format!("datagram to {} lost: {e}", t.to));
                    }
                }
                Output::Event(event) => {
                    log(clock, WHO, format!("event {event:?}"));
                    on_event(actor, clock.now(), event);
                }
                Output::Lost { count } => warn(
                    clock,
                    WHO,
                    format!("{count} outputs lost: the actor's outbox was full"),
                ),
                other => warn(
                    clock,
                    WHO,
                    format!("{other:?} dropped: this loop has one datagram socket only"),
                ),
            }
        }
        // 2. Arm the one timer (asked last).
        let wait = match actor.poll_timeout() {
            Some(at) => {
                let wait = clock.until(at);
                if wait.is_zero() {
                    actor.handle_timeout(clock.now());
                    continue;
                }
                Some(wait)
            }
            None => None,
        };
        socket
            .set_read_timeout(wait)
            .map_err(DriverError::socket("setting the read timeout"))?;
        // 3. Wait for a datagram or the deadline.
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let input = Input::Datagram {
                    from,
                    to: local,
                    data: &buf[..n],
                };
                if let Err(e) = actor.handle_input(clock.now(), input) {
                    warn(clock, WHO, format!("datagram from {from} refused: {e}"));
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                actor.handle_timeout(clock.now());
            }
            // An ICMP error for an earlier send (Linux reports "connection refused" on
            // the next read): the next datagram is unaffected.
            Err(e) => warn(clock, WHO, format!("read: {e}")),
        }
    }
}
