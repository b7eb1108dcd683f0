//! The playground page at `GET /`, in a real headless Chromium: it loads from a running
//! server, a text is typed, the label bars show the server's scores, and a screenshot is
//! saved.
//!
//! Chromium must be installed (`cargo xtask test` installs Debian's `chromium` when it is
//! missing; `CHROME` names another binary). `SEQUIN_PLAYGROUND_MODEL` serves another model
//! and `SEQUIN_PLAYGROUND_SCREENSHOT` saves the screenshot elsewhere (the README's comes from
//! the main job's model).

use std::path::PathBuf;
use std::time::Duration;

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions};
use serde_json::{Value, json};

use super::serve::Server;
use super::tiny_model;

/// The Chromium binary: `$CHROME`, else the first of the usual names on the PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROME") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no Chromium found for the playground test: run `cargo xtask test` (it installs Debian's chromium), or install one and set CHROME"
    );
}

#[test]
fn the_playground_page_shows_the_servers_scores_in_a_real_browser() {
    let model = std::env::var_os("SEQUIN_PLAYGROUND_MODEL").map_or_else(tiny_model, PathBuf::from);
    let s = Server::start(&model, &[]);
    let options = LaunchOptions::default_builder()
        .path(Some(chromium()))
        .sandbox(false)
        .window_size(Some((1200, 760)))
        .idle_browser_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let browser = Browser::new(options).unwrap();
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(60));
    tab.navigate_to(&format!("{}/", s.base)).unwrap();
    tab.wait_until_navigated().unwrap();
    // The page read /info: the model card is filled in.
    tab.wait_for_element("body[data-ready='1']").unwrap();
    let family = tab
        .find_element("dd[data-key='family']")
        .unwrap()
        .get_inner_text()
        .unwrap();
    assert_eq!(family, "bert");

    let text = "The coffee arrived fresh and tastes wonderful, I will order it again.";
    tab.find_element("#text").unwrap().click().unwrap();
    tab.type_str(text).unwrap();
    tab.find_element("#run").unwrap().click().unwrap();
    tab.wait_for_element("#results .row").unwrap();
    let shown = tab
        .evaluate(
            "JSON.stringify([...document.querySelectorAll('#results .row')].map(r => [r.dataset.label, Number(r.dataset.score), r.querySelector('.fill').style.width]))",
            false,
        )
        .unwrap()
        .value
        .unwrap();
    let shown: Vec<(String, f64, String)> = serde_json::from_str(shown.as_str().unwrap()).unwrap();

    // The bars are the server's scores for that text, best first, each as wide as its score.
    let (status, expected) = s.post(
        "/classify",
        &json!({"inputs": {"text": text}, "top_k": "all"}),
    );
    assert_eq!(status, 200);
    let expected: Vec<&Value> = expected["top_k"].as_array().unwrap().iter().collect();
    assert_eq!(shown.len(), expected.len(), "one bar per label");
    for ((label, score, width), e) in shown.iter().zip(expected) {
        assert_eq!(label, e["label"].as_str().unwrap());
        assert!((score - e["score"].as_f64().unwrap()).abs() < 1e-6);
        let pct: f64 = width.trim_end_matches('%').parse().unwrap();
        assert!((pct - 100.0 * score).abs() < 0.01, "{width} for {score}");
    }

    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let out = std::env::var_os("SEQUIN_PLAYGROUND_SCREENSHOT").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("playground.png"),
        PathBuf::from,
    );
    std::fs::write(&out, png).unwrap();
    eprintln!("playground screenshot: {}", out.display());
}
