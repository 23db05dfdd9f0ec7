//! Email alerts in a build without the `smtp` feature: configuring them is an error at
//! start-up, so nothing is silently not sent.

use std::time::Duration;

use super::{Alert, AlertError, ChannelError, EmailTarget};

pub(crate) struct EmailChannel {
    pub(crate) label: String,
}

impl EmailChannel {
    pub(crate) fn build(_target: &EmailTarget, _timeout: Duration) -> Result<Self, AlertError> {
        Err(AlertError::EmailUnsupported)
    }

    pub(crate) async fn send(&self, _alert: &Alert) -> Result<(), ChannelError> {
        Ok(())
    }
}
