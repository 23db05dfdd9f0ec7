//! Terminal output helpers: colours only when stdout is a terminal and NO_COLOR is unset.

use std::io::IsTerminal;

use upkeep_core::state::TokenState;

pub fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub fn state_label(state: TokenState, colour: bool) -> String {
    let (text, code) = match state {
        TokenState::Healthy => ("healthy", "32"),
        TokenState::Warning => ("warning", "33"),
        TokenState::Critical => ("critical", "31"),
        TokenState::Expired => ("EXPIRED", "1;31"),
    };
    if colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}
