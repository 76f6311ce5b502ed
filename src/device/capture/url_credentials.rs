//! The user name and password of a network camera's URL, taken out of it:
//! they go to the camera's authentication, and the URL that is requested
//! (and so any error message quoting it) carries none.

use anyhow::{anyhow, Result};

/// User name and password, percent-decoded (`p%40ss` is `p@ss`).
#[derive(Clone, Debug, PartialEq)]
pub struct UrlCredentials {
    pub username: String,
    pub password: String,
}

/// The URL without its userinfo, and the credentials it held.
pub fn split_credentials(spec: &str) -> Result<(url::Url, Option<UrlCredentials>)> {
    let mut url = url::Url::parse(spec).map_err(|e| anyhow!("{e}"))?;
    // userinfo is percent-encoded only: `+` stays a plus (unlike a query)
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let creds = (!url.username().is_empty()).then(|| UrlCredentials {
        username: decode(url.username()),
        password: decode(url.password().unwrap_or("")),
    });
    // Url's setters fail only for URLs that cannot have credentials, and
    // those had none to remove.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_decoded() {
        let (url, creds) = split_credentials("rtsp://admin:p%40ss+1@cam.local:8554/live").unwrap();
        assert_eq!(url.as_str(), "rtsp://cam.local:8554/live");
        let creds = creds.unwrap();
        assert_eq!(creds.username, "admin");
        assert_eq!(creds.password, "p@ss+1");
        let (url, creds) = split_credentials("http://cam.local/video.mjpg?x=1").unwrap();
        assert_eq!(url.as_str(), "http://cam.local/video.mjpg?x=1");
        assert!(creds.is_none());
        assert!(split_credentials("rtsp://[bad").is_err());
    }
}
