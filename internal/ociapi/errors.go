package ociapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wharf-mirror/wharf/internal/mirror"
	"github.com/wharf-mirror/wharf/internal/route"
	"github.com/wharf-mirror/wharf/internal/upstream"
	upauth "github.com/wharf-mirror/wharf/internal/upstream/auth"
)

// Error codes of the distribution spec ("Error Codes"), plus UNAVAILABLE,
// which distribution also uses for 503.
const (
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeManifestInvalid = "MANIFEST_INVALID"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeNameInvalid     = "NAME_INVALID"
	codeNameUnknown     = "NAME_UNKNOWN"
	codeDenied          = "DENIED"
	codeUnauthorized    = "UNAUTHORIZED"
	// codePaginationInvalid is distribution's code for a bad n.
	codePaginationInvalid = "PAGINATION_NUMBER_INVALID"
	codeUnsupported       = "UNSUPPORTED"
	codeTooManyRequests   = "TOOMANYREQUESTS"
	codeUnavailable       = "UNAVAILABLE"
	codeUnknown           = "UNKNOWN"
)

// Error is an error answered to the client as OCI error JSON.
type Error struct {
	Status     int
	Code       string
	Message    string
	RetryAfter string // Retry-After header, for 429
	Challenge  string // WWW-Authenticate header, for 401
	cause      error
}

func (e *Error) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Code, e.Message, e.cause)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.cause }

func apiError(status int, code, msg string, cause error) *Error {
	return &Error{Status: status, Code: code, Message: msg, cause: cause}
}

// unknownCode is the "not found" code for each kind of object.
func unknownCode(k route.Kind) string {
	switch k {
	case route.KindBlob:
		return codeBlobUnknown
	case route.KindManifest:
		return codeManifestUnknown
	default:
		return codeNameUnknown
	}
}

// toAPIError is the one mapping from errors to what the client sees.
func toAPIError(kind route.Kind, err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	var acc *AccessError
	if errors.As(err, &acc) {
		return acc.apiError()
	}
	var re *upstream.ResponseError
	hasRE := errors.As(err, &re)
	var tokenErr *upauth.TokenError
	switch {
	case errors.Is(err, route.ErrNotFound):
		return apiError(http.StatusNotFound, codeUnsupported, "no such registry API endpoint", nil)
	case errors.Is(err, route.ErrUnsupported):
		return apiError(http.StatusMethodNotAllowed, codeUnsupported, "this endpoint is not supported by the mirror", nil)
	case errors.Is(err, route.ErrNameInvalid):
		return apiError(http.StatusBadRequest, codeNameInvalid, "invalid repository name", nil)
	case errors.Is(err, route.ErrTagInvalid):
		return apiError(http.StatusBadRequest, codeManifestInvalid, "invalid tag", nil)
	case errors.Is(err, route.ErrDigestInvalid):
		return apiError(http.StatusBadRequest, codeDigestInvalid, "invalid digest", nil)
	case errors.Is(err, route.ErrUnknownRegistry), errors.Is(err, mirror.ErrUnknownUpstream):
		return apiError(http.StatusNotFound, codeNameUnknown, "registry is not configured on this mirror", err)
	case errors.Is(err, mirror.ErrNotInRepository):
		return apiError(http.StatusNotFound, unknownCode(kind), "content is not known in this repository and upstream could not confirm it", err)
	case errors.Is(err, mirror.ErrNotFound):
		code := unknownCode(kind)
		if hasRE && len(re.Errors) > 0 && re.Errors[0].Code == codeNameUnknown {
			code = codeNameUnknown
		}
		return apiError(http.StatusNotFound, code, "not found upstream", err)
	case errors.Is(err, mirror.ErrSchema1Signed):
		return apiError(http.StatusBadGateway, codeManifestInvalid, err.Error(), nil)
	case errors.Is(err, upstream.ErrManifestTooLarge):
		return apiError(http.StatusBadGateway, codeManifestInvalid, "upstream manifest exceeds the 4 MiB limit", err)
	case errors.Is(err, upstream.ErrDigestMismatch):
		return apiError(http.StatusBadGateway, codeUnavailable, "upstream returned content that does not match its digest", err)
	case errors.Is(err, upstream.ErrTooManyRedirects):
		return apiError(http.StatusBadGateway, codeUnavailable, "upstream redirected more than 10 times (a redirect loop)", err)
	case errors.Is(err, mirror.ErrListingTooLarge):
		return apiError(http.StatusBadGateway, codeUnavailable, "upstream's listing is larger than the 8 MiB wharf relays", err)
	case errors.As(err, &tokenErr):
		if tokenErr.StatusCode >= 500 {
			return apiError(http.StatusServiceUnavailable, codeUnavailable, "upstream's token service failed with status "+strconv.Itoa(tokenErr.StatusCode), err)
		}
		return apiError(http.StatusBadGateway, codeUnavailable, "upstream's token service refused wharf with status "+strconv.Itoa(tokenErr.StatusCode)+"; check the upstream's credentials", err)
	case hasRE && re.StatusCode == http.StatusBadRequest:
		return apiError(http.StatusBadRequest, codeUnsupported, "upstream rejected the request as invalid"+upstreamCode(re), err)
	case errors.Is(err, upstream.ErrRedirect), errors.Is(err, upstream.ErrInternalAddress):
		return apiError(http.StatusBadGateway, codeUnavailable, "upstream sent wharf to a target it refuses (not http(s), or an internal address)", err)
	case errors.Is(err, upauth.ErrRealmNotAllowed):
		return apiError(http.StatusBadGateway, codeUnavailable, "upstream's token realm is neither on its own host nor allowed by token_realms", err)
	case errors.Is(err, upauth.ErrNoToken):
		return apiError(http.StatusBadGateway, codeUnavailable, "upstream's token service answered without a usable token", err)
	case hasRE:
		return upstreamStatusError(kind, re.StatusCode, re.Header.Get("Retry-After"), err)
	case errors.Is(err, upstream.ErrUnreachable):
		return apiError(http.StatusServiceUnavailable, codeUnavailable, "upstream registry is unreachable", err)
	case errors.Is(err, mirror.ErrFetchFailed):
		return apiError(http.StatusBadGateway, codeUnavailable, "upstream transfer failed or did not match its digest; nothing was cached", err)
	case errors.Is(err, context.DeadlineExceeded):
		return apiError(http.StatusGatewayTimeout, codeUnavailable, "upstream registry timed out", err)
	default:
		return apiError(http.StatusInternalServerError, codeUnknown, "internal error", err)
	}
}

// upstreamCode is ": <code>" for the first error code of an upstream error
// document, when it is a plain code word, or "".
func upstreamCode(re *upstream.ResponseError) string {
	if len(re.Errors) == 0 {
		return ""
	}
	c := re.Errors[0].Code
	if c == "" || len(c) > 64 || strings.Trim(c, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != "" {
		return ""
	}
	return ": " + c
}

// upstreamStatusError maps an upstream failure status to the client's
// answer. Upstream 401 becomes 404 NAME_UNKNOWN: Docker Hub answers 401 for
// repositories that do not exist, and a 401 without a challenge of our own
// would send clients into an authentication loop.
func upstreamStatusError(kind route.Kind, status int, retryAfter string, cause error) *Error {
	switch {
	case status == http.StatusNotFound:
		return apiError(http.StatusNotFound, unknownCode(kind), "not found upstream", cause)
	case status == http.StatusTooManyRequests:
		e := apiError(http.StatusTooManyRequests, codeTooManyRequests, "upstream rate limit reached", cause)
		e.RetryAfter = retryAfter
		return e
	case status == http.StatusUnauthorized:
		return apiError(http.StatusNotFound, codeNameUnknown, "upstream refused access: the repository does not exist or needs credentials", cause)
	case status == http.StatusForbidden:
		return apiError(http.StatusForbidden, codeDenied, "upstream denied access", cause)
	case status >= 500:
		return apiError(http.StatusServiceUnavailable, codeUnavailable, "upstream registry failed with status "+strconv.Itoa(status), cause)
	default:
		return apiError(http.StatusBadGateway, codeUnavailable, "unexpected upstream status "+strconv.Itoa(status), cause)
	}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeError renders e as OCI error JSON. It is the only writer of error
// responses.
func writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code, Message: e.Message}}})
	h := w.Header()
	for _, k := range []string{"Docker-Content-Digest", "ETag", "Accept-Ranges", "X-Wharf-Cache", "Warning"} {
		h.Del(k)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if e.RetryAfter != "" {
		h.Set("Retry-After", e.RetryAfter)
	}
	if e.Challenge != "" {
		h.Set("WWW-Authenticate", e.Challenge)
	}
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// AccessError is how an Authorizer refuses a request: 401 UNAUTHORIZED
// with a challenge (no or bad credentials), 403 DENIED (credentials fine,
// not allowed), or 429 TOOMANYREQUESTS (too many failed attempts).
type AccessError struct {
	Status     int
	Message    string
	Challenge  string        // WWW-Authenticate value, for 401
	RetryAfter time.Duration // for 429
	Cause      error
}

func (e *AccessError) Error() string { return e.Message }
func (e *AccessError) Unwrap() error { return e.Cause }

func (e *AccessError) apiError() *Error {
	code := codeUnauthorized
	switch e.Status {
	case http.StatusForbidden:
		code = codeDenied
	case http.StatusTooManyRequests:
		code = codeTooManyRequests
	}
	ae := apiError(e.Status, code, e.Message, e.Cause)
	ae.Challenge = e.Challenge
	if e.RetryAfter > 0 {
		ae.RetryAfter = strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds())))
	}
	return ae
}
