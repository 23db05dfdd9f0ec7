//! Response envelopes: the Upstox API gateway's `{"status":"error","errors":[...]}`
//! (both camelCase and snake_case keys, like the live gateway) and the login
//! service's `{"success":...}` shape. Every JSON response carries
//! `Content-Type: application/json` exactly (no charset), because the
//! upstox-totp client compares the header with `==`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

/// A JSON response with `Content-Type: application/json` and nothing else in the header.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `{"status":...,"data":...}` in that key order.
#[derive(Serialize)]
struct Envelope<'a> {
    status: &'a str,
    data: Value,
}

/// `{"status":"success","data":...}` with 200.
pub(crate) fn success(data: Value) -> Response {
    json_response(
        StatusCode::OK,
        &Envelope {
            status: "success",
            data,
        },
    )
}

/// One entry of `errors`, in the live gateway's key order.
#[derive(Serialize)]
#[allow(non_snake_case)]
struct ErrorItem<'a> {
    errorCode: &'a str,
    message: &'a str,
    propertyPath: Option<&'a str>,
    invalidValue: Option<&'a str>,
    error_code: &'a str,
    property_path: Option<&'a str>,
    invalid_value: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    status: &'a str,
    errors: [ErrorItem<'a>; 1],
}

/// `{"success":...,"data":...,"error":...}` in that key order.
#[derive(Serialize)]
struct LoginEnvelope {
    success: bool,
    data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// An Upstox API gateway error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// `invalidValue` / `invalid_value`: the value refused, when one is to blame.
    pub invalid_value: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            invalid_value: None,
        }
    }

    /// Names the refused value in `invalidValue` / `invalid_value`.
    pub fn with_invalid_value(mut self, value: impl Into<String>) -> ApiError {
        self.invalid_value = Some(value.into());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 UDAPI100050: expired, revoked, unknown, malformed or missing token.
    pub fn invalid_token() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UDAPI100050",
            "Invalid token used to access API",
        )
    }

    /// 401 UDAPI100067: the extended token may not call this API.
    pub fn extended_not_permitted() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UDAPI100067",
            "The API you are trying to access is not permitted with an extended_token",
        )
    }

    /// 429 UDAPI10005.
    pub fn rate_limited() -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "UDAPI10005",
            "Too Many Request Sent",
        )
    }

    /// 429 UDAPI100099: the token endpoints' own limit.
    pub fn token_api_rate_limited() -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "UDAPI100099",
            "Token API rate limit exceeded",
        )
    }

    /// 500 UDAPI100500.
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UDAPI100500",
            "Something went wrong... please contact us",
        )
    }

    /// 401 UDAPI100016.
    pub fn invalid_credentials(status: StatusCode) -> ApiError {
        ApiError::new(status, "UDAPI100016", "Invalid Credentials")
    }

    fn envelope(&self) -> ErrorEnvelope<'_> {
        ErrorEnvelope {
            status: "error",
            errors: [ErrorItem {
                errorCode: self.code,
                message: &self.message,
                propertyPath: None,
                invalidValue: self.invalid_value.as_deref(),
                error_code: self.code,
                property_path: None,
                invalid_value: self.invalid_value.as_deref(),
            }],
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.envelope())
    }
}

/// `{"success":true,"data":...}` with 200 (login service).
pub(crate) fn login_success(data: Value) -> Response {
    json_response(
        StatusCode::OK,
        &LoginEnvelope {
            success: true,
            data,
            error: None,
        },
    )
}

/// Login-service error codes: integers in the 1017xxx range, like Upstox's. Only
/// these three were seen in public captures; the simulator uses the generic one for
/// every other refusal and tells them apart by the message, as Upstox does.
pub(crate) mod login_code {
    /// Generic refusal (seen for a rejected PIN).
    pub const GENERIC: u32 = 1_017_016;
    /// Too many OTPs generated; "try again after 10 mins".
    pub const OTP_LIMIT: u32 = 1_017_069;
    /// The session that validates the OTP has expired.
    pub const OTP_SESSION_EXPIRED: u32 = 1_017_076;
}

/// A login-service error: `{"success":false,"data":null,"error":{"code":<integer>,"message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoginError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

impl LoginError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> LoginError {
        LoginError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 400 refusal with the generic code.
    pub fn refused(message: impl Into<String>) -> LoginError {
        LoginError::new(StatusCode::BAD_REQUEST, login_code::GENERIC, message)
    }

    /// The response, with HTTP 200 instead of the error status when `as_200` (the
    /// `login_errors_as_200` setting: Upstox's status for these is unknown).
    pub fn respond(self, as_200: bool) -> Response {
        let status = if as_200 { StatusCode::OK } else { self.status };
        json_response(
            status,
            &LoginEnvelope {
                success: false,
                data: Value::Null,
                error: Some(json!({"code": self.code, "message": self.message})),
            },
        )
    }
}

impl IntoResponse for LoginError {
    fn into_response(self) -> Response {
        self.respond(false)
    }
}
