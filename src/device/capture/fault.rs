//! A source that injects the faults a camera has in the field, for tests
//! and demos: `fault:EVENTS` is the synthetic camera with a comma-separated
//! list of events, each at a frame index (frames delivered so far):
//!
//! - `disconnect@N+MS`: the device goes away before frame N and cannot be
//!   reopened for MS milliseconds (a USB camera unplugged and replugged);
//! - `missing+MS`: the device is absent for MS ms at start;
//! - `stall@N+MS`: no frame for MS ms before frame N (reads time out);
//! - `corrupt@N`: frame N is a truncated MJPEG (the converter rejects it);
//! - `error@N`: the driver flags frame N as corrupt.
//!
//! Example: `fault:disconnect@20+800,corrupt@5,stall@40+2500`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::source::SourceConfig;
use super::synthetic::SyntheticSource;
use super::{CaptureError, Frame, Opener, Pacer, PixelFormat, Source};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Disconnect { at: u64, down: Duration },
    Missing { down: Duration },
    Stall { at: u64, stall: Duration },
    Corrupt { at: u64 },
    Error { at: u64 },
}

fn parse_events(spec: &str) -> Result<Vec<Fault>> {
    let mut out = Vec::new();
    for ev in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let err = || {
            format!("fault event {ev:?}: expected disconnect@N+MS, missing+MS, stall@N+MS, corrupt@N or error@N")
        };
        let (kind, rest) = ev.split_once(['@', '+']).with_context(err)?;
        let at_ms = |rest: &str| -> Result<(u64, Duration)> {
            let (n, ms) = rest.split_once('+').with_context(err)?;
            Ok((
                n.parse().with_context(err)?,
                Duration::from_millis(ms.parse().with_context(err)?),
            ))
        };
        out.push(match kind {
            "disconnect" => {
                let (at, down) = at_ms(rest)?;
                Fault::Disconnect { at, down }
            }
            "missing" => Fault::Missing {
                down: Duration::from_millis(rest.parse().with_context(err)?),
            },
            "stall" => {
                let (at, stall) = at_ms(rest)?;
                Fault::Stall { at, stall }
            }
            "corrupt" => Fault::Corrupt {
                at: rest.parse().with_context(err)?,
            },
            "error" => Fault::Error {
                at: rest.parse().with_context(err)?,
            },
            _ => bail!(err()),
        });
    }
    Ok(out)
}

/// State shared by every (re)opened instance: the device's frame counter
/// and which faults have fired survive a reconnect, as a real camera's
/// world would.
struct Shared {
    inner: SyntheticSource,
    delivered: u64,
    fired: Vec<bool>,
    absent_until: Option<Instant>,
    stall_until: Option<Instant>,
}

pub struct FaultOpener {
    spec: String,
    events: Vec<Fault>,
    shared: Arc<Mutex<Shared>>,
    fps: f32,
    timeout: Duration,
}

impl FaultOpener {
    pub fn new(spec: &str, cfg: &SourceConfig) -> Result<Self> {
        let events = parse_events(spec)?;
        let absent_until = events.iter().find_map(|e| match e {
            Fault::Missing { down } => Some(Instant::now() + *down),
            _ => None,
        });
        // Frames come from next_frame(): this source paces itself, so a
        // stall does not shift the synthetic camera's clock.
        let inner = SyntheticSource::new(cfg)?;
        Ok(Self {
            spec: spec.to_string(),
            shared: Arc::new(Mutex::new(Shared {
                inner,
                delivered: 0,
                fired: vec![false; events.len()],
                absent_until,
                stall_until: None,
            })),
            events,
            fps: cfg.fps,
            timeout: Duration::from_millis(cfg.timeout_ms),
        })
    }
}

impl Opener for FaultOpener {
    fn open(&mut self) -> Result<Box<dyn Source>> {
        let s = self.shared.lock().expect("fault state");
        if let Some(until) = s.absent_until {
            if Instant::now() < until {
                bail!("no such device (injected fault)");
            }
        }
        drop(s);
        Ok(Box::new(FaultSource {
            events: self.events.clone(),
            shared: self.shared.clone(),
            pacer: Pacer::new(self.fps),
            timeout: self.timeout,
            lost: false,
        }))
    }

    fn name(&self) -> String {
        format!("fault:{}", self.spec)
    }

    fn live(&self) -> bool {
        self.fps > 0.0
    }
}

struct FaultSource {
    events: Vec<Fault>,
    shared: Arc<Mutex<Shared>>,
    pacer: Pacer,
    timeout: Duration,
    /// This handle saw the disconnect: it stays dead, as a closed fd would.
    lost: bool,
}

impl Source for FaultSource {
    fn read_into(&mut self, frame: &mut Frame) -> Result<(), CaptureError> {
        if self.lost {
            return Err(CaptureError::Disconnected("device gone (injected)".into()));
        }
        let mut s = self.shared.lock().expect("fault state");
        let n = s.delivered;
        for (k, ev) in self.events.iter().enumerate() {
            match *ev {
                Fault::Disconnect { at, down } if at == n && !s.fired[k] => {
                    s.fired[k] = true;
                    s.absent_until = Some(Instant::now() + down);
                    self.lost = true;
                    return Err(CaptureError::Disconnected(
                        "device unplugged (injected)".into(),
                    ));
                }
                Fault::Stall { at, stall } if at == n && !s.fired[k] => {
                    s.fired[k] = true;
                    s.stall_until = Some(Instant::now() + stall);
                }
                _ => {}
            }
        }
        if let Some(until) = s.stall_until {
            let now = Instant::now();
            if now < until {
                // A stalled driver: the read blocks for the timeout, then fails.
                let wait = (until - now).min(self.timeout);
                drop(s);
                std::thread::sleep(wait);
                if Instant::now() < until {
                    return Err(CaptureError::Timeout);
                }
                s = self.shared.lock().expect("fault state");
            }
            s.stall_until = None;
        }
        drop(s);
        self.pacer.wait();
        let mut s = self.shared.lock().expect("fault state");
        s.inner.next_frame(frame)?;
        s.delivered += 1;
        for (k, ev) in self.events.iter().enumerate() {
            match *ev {
                Fault::Corrupt { at } if at == n && !s.fired[k] => {
                    s.fired[k] = true;
                    // The first bytes of a JPEG, cut off: what a USB
                    // transfer error leaves in an MJPEG buffer.
                    frame.format = PixelFormat::Mjpeg;
                    frame.stride_bytes = 0;
                    frame.data.truncate(64);
                    frame.data[..4].copy_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
                }
                Fault::Error { at } if at == n && !s.fired[k] => {
                    s.fired[k] = true;
                    return Err(CaptureError::Corrupt(format!(
                        "frame {n} flagged corrupt (injected)"
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "{} with injected faults",
            self.shared.lock().expect("fault state").inner.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events() {
        let e =
            parse_events("disconnect@20+800, corrupt@5,stall@40+2500,error@3,missing+100").unwrap();
        assert_eq!(
            e[0],
            Fault::Disconnect {
                at: 20,
                down: Duration::from_millis(800)
            }
        );
        assert_eq!(e.len(), 5);
        assert!(parse_events("unplug@3").is_err());
        assert!(parse_events("disconnect@3").is_err());
    }
}
