//! A program in a real terminal: a private tmux server (`tmux -L <name>`) runs it in a
//! pane of a fixed size; keys go in with `send-keys`, the screen comes out with
//! `capture-pane`. The server accepts OSC 52 (`set-clipboard on`), so what a program
//! copies lands in tmux's paste buffer. The server is killed on drop.

use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

use test_harness::HarnessResult;

/// One tmux server with one session running the program.
#[derive(Debug)]
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `program args` with exactly `envs` added, in a `width`x`height` pane.
    pub fn start<'a>(
        width: u16,
        height: u16,
        program: &OsStr,
        args: impl IntoIterator<Item = &'a OsStr>,
        envs: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>,
    ) -> HarnessResult<Self> {
        let tmux = Self { socket: format!("stack-checks-{}-{}", std::process::id(), test_harness::free_port()) };
        let mut command = vec!["env".into()];
        command.extend(envs.into_iter().map(|(k, v)| {
            let mut pair = k.to_os_string();
            pair.push("=");
            pair.push(v);
            pair
        }));
        command.push(program.to_os_string());
        command.extend(args.into_iter().map(OsStr::to_os_string));
        let (width, height) = (width.to_string(), height.to_string());
        // remain-on-exit keeps the pane (and its last screen) when the program ends.
        tmux.run(["-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", &width, "-y", &height])?;
        tmux.run(["set-option", "-s", "set-clipboard", "on"])?;
        tmux.run(["set-option", "-g", "remain-on-exit", "on"])?;
        let mut respawn: Vec<std::ffi::OsString> = ["respawn-pane", "-k", "-t", "t"].map(Into::into).to_vec();
        respawn.extend(command);
        tmux.run(respawn)?;
        Ok(tmux)
    }

    fn run<I, S>(&self, args: I) -> HarnessResult<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .map_err(|e| format!("tmux (apt-get install tmux): {e}"))?;
        if !output.status.success() {
            return Err(format!("tmux: {}", String::from_utf8_lossy(&output.stderr)));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Sends tmux key names (`j`, `Enter`, `Escape`, `C-t`).
    pub fn keys(&self, keys: &[&str]) -> HarnessResult<()> {
        self.run([&["send-keys", "-t", "t"][..], keys].concat()).map(drop)
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) -> HarnessResult<()> {
        self.run(["send-keys", "-t", "t", "-l", text]).map(drop)
    }

    /// The pane's screen as text, one line per row.
    pub fn screen(&self) -> HarnessResult<String> {
        self.run(["capture-pane", "-p", "-t", "t"])
    }

    /// Waits until the screen satisfies `ready`; the last screen in the error.
    pub async fn wait_for(&self, what: &str, timeout: Duration, ready: impl Fn(&str) -> bool) -> HarnessResult<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen()?;
            if ready(&screen) {
                return Ok(screen);
            }
            if Instant::now() > deadline {
                return Err(format!("{what}: not on screen within {timeout:?}:\n{screen}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The newest paste buffer (what the program copied with OSC 52), if any.
    pub fn copied(&self) -> Option<String> {
        self.run(["show-buffer"]).ok()
    }

    /// Whether the program has exited.
    pub fn exited(&self) -> bool {
        self.run(["display-message", "-p", "-t", "t", "#{pane_dead}"]).is_ok_and(|out| out.trim() == "1")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(["kill-server"]);
    }
}
