//! A value a wgpu callback delivers (a buffer mapped, a device created), as a future: the
//! async core awaits it, which a browser needs (its callbacks run only once control returns
//! to its event loop); native code blocks on it (`pollster`), polling the device first.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// The future half: ready once the callback has delivered.
pub struct Landing<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// A callback to hand to wgpu, and the future of what it delivers.
pub fn landing<T: Send + 'static>() -> (impl FnOnce(T) + Send + 'static, Landing<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
    }));
    let deliver = {
        let slot = slot.clone();
        move |value: T| {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            s.value = Some(value);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    };
    (deliver, Landing { slot })
}

impl<T> Future for Landing<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_before_or_after_the_wait_the_value_arrives() {
        let (deliver, landed) = landing();
        deliver(3);
        assert_eq!(pollster::block_on(landed), 3);
        // Delivered from another thread while the waiter is parked.
        let (deliver, landed) = landing();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            deliver("late");
        });
        assert_eq!(pollster::block_on(landed), "late");
        t.join().unwrap();
    }
}
