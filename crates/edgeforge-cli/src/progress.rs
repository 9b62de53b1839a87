//! Progress bars on stderr; indicatif draws nothing when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

pub fn chunks_bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total as u64), indicatif::ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} perplexity [{bar:30}] {pos}/{len} chunks  {msg}  {elapsed} (ETA {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

pub fn spinner(msg: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_message(msg);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A bar over `total` items of work named `what` (units, tensors, ...), with ETA.
pub fn items_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total as u64), indicatif::ProgressDrawTarget::stderr());
    let template = format!("{{spinner}} [{{bar:30}}] {{pos}}/{{len}} {what}  {{msg}}  {{elapsed}} (ETA {{eta}})");
    let style = ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// A byte bar for dataset downloads, drawn as `edgeforge_eval::datasets` reports them.
pub fn install_download_bar() {
    use edgeforge_eval::download::DownloadEvent;
    let bar = std::sync::Mutex::new(None::<ProgressBar>);
    edgeforge_eval::datasets::set_download_progress(Box::new(move |e| {
        let Ok(mut slot) = bar.lock() else { return };
        match e {
            DownloadEvent::Start { name, url, done, total } => {
                let b = ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template("{spinner} downloading {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} (ETA {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                b.set_style(style);
                b.set_message(format!("{name} from {url}"));
                b.set_position(done);
                *slot = Some(b);
            }
            DownloadEvent::Advance { done } => {
                if let Some(b) = slot.as_ref() {
                    b.set_position(done);
                }
            }
            DownloadEvent::Done => {
                if let Some(b) = slot.take() {
                    b.finish_and_clear();
                }
            }
        }
    }));
}
