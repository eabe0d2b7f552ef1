//! The request's spans (`tracing.otlp`): what the stages learned goes into
//! the sampled request's [`Draft`](crate::observe::trace::Draft), which the
//! response body ends. Each hook is one `None` check when the request is
//! not sampled or tracing is off.

use http::{Response, StatusCode};

use super::Exchange;
use crate::observe::trace::Answer;
use crate::pipeline::body::ProxyBody;

impl Exchange<'_> {
    /// The upstream exchange: `None` as the request leaves, then the
    /// response's status, or `Some(None)` when it failed.
    pub(super) fn span_upstream(&mut self, answered: Option<Option<StatusCode>>) {
        let Some(span) = self.span.as_mut() else {
            return;
        };
        match answered {
            None => span.upstream_sent(),
            Some(status) => span.upstream_answered(status.map(|s| s.as_u16())),
        }
    }

    /// The answer's attributes; the body ends the spans with the response.
    pub(super) fn span_answered(
        &mut self,
        resp: &mut Response<ProxyBody>,
        decision: &'static str,
        error: Option<&'static str>,
        grpc_status: Option<u8>,
    ) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        span.answered(
            &Answer {
                path: &self.learned.path,
                route: self.learned.route.as_deref(),
                status: Some(resp.status().as_u16()),
                decision,
                error,
                grpc_status,
                outcome: self.learned.outcome.as_deref(),
                user: self.learned.user.as_deref(),
            },
            self.grpc.is_some(),
        );
        resp.body_mut().trace(span);
    }

    /// A request dropped before it had a response (the client went away):
    /// its spans end now, without a status.
    pub(super) fn span_cancelled(&mut self, decision: &'static str) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        span.answered(
            &Answer {
                path: &self.learned.path,
                route: self.learned.route.as_deref(),
                status: None,
                decision,
                error: Some(super::CLIENT_CLOSED_REQUEST),
                grpc_status: None,
                outcome: self.learned.outcome.as_deref(),
                user: self.learned.user.as_deref(),
            },
            self.grpc.is_some(),
        );
        span.end(false);
    }

    /// The decision of a request dropped before its response: allowed
    /// (forwarded), denied, or cancelled before it was decided.
    pub(super) fn cancelled_decision(&self) -> &'static str {
        match &self.learned.outcome {
            _ if self.learned.forwarded => "allow",
            Some(o) if !o.decision.allowed => "deny",
            _ => "cancelled",
        }
    }
}
