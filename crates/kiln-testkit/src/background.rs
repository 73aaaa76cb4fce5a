//! A tokio runtime on its own thread, so that the test servers work from
//! sync tests and from any runtime of the test (even one that blocks).

use std::future::Future;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

pub(crate) struct Background {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    pub(crate) fn start(name: &str) -> Background {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("test runtime");
                ready_tx
                    .send(runtime.handle().clone())
                    .expect("test runtime handle");
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                runtime.shutdown_background();
            })
            .expect("test runtime thread");
        Background {
            handle: ready_rx.recv().expect("test runtime started"),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub(crate) fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        self.handle.spawn(fut);
    }

    /// Binds a loopback listener on a free port inside the runtime.
    pub(crate) fn bind(&self) -> tokio::net::TcpListener {
        let std = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        std.set_nonblocking(true).expect("nonblocking listener");
        let _guard = self.handle.enter();
        tokio::net::TcpListener::from_std(std).expect("tokio listener")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
