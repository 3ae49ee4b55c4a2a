package auth

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// tokenCall is one request to the token endpoint.
type tokenCall struct {
	method string
	query  string
	authz  string
	form   url.Values // POST body; nil for none
	ctype  string     // Content-Type of the body; default form-urlencoded
}

func (c tokenCall) do(t *testing.T, h http.Handler) *http.Response {
	t.Helper()
	var body io.Reader
	if c.form != nil {
		body = strings.NewReader(c.form.Encode())
	}
	method := c.method
	if method == "" {
		method = http.MethodGet
	}
	r := httptest.NewRequest(method, "http://mirror.test/token?"+c.query, body)
	r.RemoteAddr = "127.0.0.1:40000"
	if c.authz != "" {
		r.Header.Set("Authorization", c.authz)
	}
	if c.form != nil {
		ct := c.ctype
		if ct == "" {
			ct = "application/x-www-form-urlencoded"
		}
		r.Header.Set("Content-Type", ct)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

const pullScope = "service=wharf&scope=repository%3Alibrary%2Fnginx%3Apull"

func TestTokenHandler(t *testing.T) {
	manyScopes := strings.Repeat("&scope=repository:a:pull", maxScopes+1)
	tests := []struct {
		name      string
		anonOff   bool
		call      tokenCall
		status    int
		principal *Principal // for 200: who the token is for
		errCode   string     // OCI error code, or OAuth2 "error" for POST 400s
		authHdr   string     // expected WWW-Authenticate
	}{
		{name: "GET basic user", call: tokenCall{query: pullScope + "&account=alice&client_id=docker&offline_token=true", authz: basic("alice", alicePass)},
			status: 200, principal: &Principal{Kind: User, Name: "alice"}},
		{name: "GET basic static token", call: tokenCall{query: pullScope, authz: basic("ci", ciSecret)},
			status: 200, principal: &Principal{Kind: StaticToken, Name: "ci"}},
		{name: "GET anonymous", call: tokenCall{query: pullScope},
			status: 200, principal: &Principal{}},
		{name: "GET no scope (docker login)", call: tokenCall{query: "service=wharf", authz: basic("bob", bobPass)},
			status: 200, principal: &Principal{Kind: User, Name: "bob"}},
		{name: "GET anonymous disabled", anonOff: true, call: tokenCall{query: pullScope},
			status: 401, errCode: "UNAUTHORIZED", authHdr: `Basic realm="wharf"`},
		{name: "GET wrong password", call: tokenCall{query: pullScope, authz: basic("alice", "nope")},
			status: 401, errCode: "UNAUTHORIZED", authHdr: `Basic realm="wharf"`},
		{name: "GET unknown user", call: tokenCall{query: pullScope, authz: basic("zed", alicePass)},
			status: 401, errCode: "UNAUTHORIZED", authHdr: `Basic realm="wharf"`},
		{name: "GET malformed Authorization", call: tokenCall{query: pullScope, authz: "Basic %%%"},
			status: 400, errCode: "UNSUPPORTED"},
		{name: "GET bearer not accepted", call: tokenCall{query: pullScope, authz: "Bearer " + ciSecret},
			status: 400, errCode: "UNSUPPORTED"},
		{name: "GET too many scopes", call: tokenCall{query: "service=wharf" + manyScopes},
			status: 400, errCode: "UNSUPPORTED"},
		{name: "GET query too long", call: tokenCall{query: "service=wharf&scope=repository:" + strings.Repeat("a", maxQueryBytes) + ":pull"},
			status: 400, errCode: "UNSUPPORTED"},
		{name: "GET malformed scope", call: tokenCall{query: "scope=repository"},
			status: 400, errCode: "UNSUPPORTED"},
		{name: "GET bad query escape", call: tokenCall{query: "scope=%zz"},
			status: 400, errCode: "UNSUPPORTED"},
		{name: "GET scope with port and class", call: tokenCall{query: "scope=repository(plugin):host:5000/a/b:pull,push&scope=registry:catalog:*", authz: basic("alice", alicePass)},
			status: 200, principal: &Principal{Kind: User, Name: "alice"}},
		{name: "POST password grant", call: tokenCall{method: "POST", form: url.Values{
			"grant_type": {"password"}, "username": {"alice"}, "password": {alicePass},
			"service": {"wharf"}, "scope": {"repository:library/nginx:pull repository:x:pull"}, "client_id": {"containerd-client"}}},
			status: 200, principal: &Principal{Kind: User, Name: "alice"}},
		{name: "POST password grant static token", call: tokenCall{method: "POST", form: url.Values{
			"grant_type": {"password"}, "username": {"robot"}, "password": {ciSecret}}},
			status: 200, principal: &Principal{Kind: StaticToken, Name: "ci"}},
		{name: "POST wrong password", call: tokenCall{method: "POST", form: url.Values{
			"grant_type": {"password"}, "username": {"alice"}, "password": {"nope"}}},
			status: 401, errCode: "UNAUTHORIZED", authHdr: `Basic realm="wharf"`},
		{name: "POST refresh_token grant", call: tokenCall{method: "POST", form: url.Values{
			"grant_type": {"refresh_token"}, "refresh_token": {"whatever"}, "service": {"wharf"}}},
			status: 400, errCode: "unsupported_grant_type"},
		{name: "POST unknown grant", call: tokenCall{method: "POST", form: url.Values{"grant_type": {"authorization_code"}}},
			status: 400, errCode: "unsupported_grant_type"},
		{name: "POST missing grant", call: tokenCall{method: "POST", form: url.Values{"username": {"alice"}}},
			status: 400, errCode: "invalid_request"},
		{name: "POST missing password", call: tokenCall{method: "POST", form: url.Values{"grant_type": {"password"}, "username": {"alice"}}},
			status: 400, errCode: "invalid_request"},
		{name: "POST wrong content type", call: tokenCall{method: "POST", ctype: "application/json", form: url.Values{"grant_type": {"password"}}},
			status: 400, errCode: "invalid_request"},
		{name: "POST body too large", call: tokenCall{method: "POST", form: url.Values{"grant_type": {"password"}, "x": {strings.Repeat("a", maxFormBytes)}}},
			status: 400, errCode: "invalid_request"},
		{name: "POST too many scopes", call: tokenCall{method: "POST", form: url.Values{"grant_type": {"password"},
			"scope": {strings.TrimSpace(strings.Repeat("repository:a:pull ", maxScopes+1))}}},
			status: 400, errCode: "invalid_scope"},
		{name: "PUT", call: tokenCall{method: "PUT", query: pullScope},
			status: 405, errCode: "UNSUPPORTED"},
		{name: "HEAD", call: tokenCall{method: "HEAD", query: pullScope},
			status: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.Anonymous = !tt.anonOff; c.TokenTTL = 5 * time.Minute })
			resp := tt.call.do(t, f.a.TokenHandler())
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.status, body)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tt.authHdr {
				t.Errorf("WWW-Authenticate %q, want %q", got, tt.authHdr)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", got)
			}
			if tt.status == http.StatusMethodNotAllowed {
				if got := resp.Header.Get("Allow"); got != "GET, POST" {
					t.Errorf("Allow %q", got)
				}
			}
			noSecrets(t, "body", string(body))
			noSecrets(t, "log", f.logs.String())
			if tt.status != http.StatusOK {
				if tt.errCode != "" {
					if got := errorCode(t, body); got != tt.errCode {
						t.Errorf("error code %q, want %q; body %s", got, tt.errCode, body)
					}
				}
				return
			}
			var tr tokenResponse
			if err := json.Unmarshal(body, &tr); err != nil {
				t.Fatalf("token body %s: %v", body, err)
			}
			want := tokenResponse{Token: tr.Token, AccessToken: tr.Token, ExpiresIn: 300, IssuedAt: "2025-03-01T12:00:00Z"}
			if diff := cmp.Diff(want, tr); diff != "" || tr.Token == "" {
				t.Errorf("token response (-want +got):\n%s", diff)
			}
			if got := resp.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q", got)
			}
			p, err := f.a.Authenticate(request("Bearer " + tr.Token))
			if err != nil {
				t.Fatalf("issued token rejected: %v", err)
			}
			if diff := cmp.Diff(*tt.principal, p); diff != "" {
				t.Errorf("token principal (-want +got):\n%s", diff)
			}
		})
	}
}

// errorCode reads an OCI error body's first code, or an OAuth2 error.
func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var v struct {
		Errors []struct{ Code, Message string }
		Error  string
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	if v.Error != "" {
		return v.Error
	}
	if len(v.Errors) != 1 || v.Errors[0].Message == "" {
		t.Fatalf("error body %s: want one error with a message", body)
	}
	return v.Errors[0].Code
}

func TestTokenHandlerFailureLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.FailureLimit = 2 })
	h := f.a.TokenHandler()
	bad := tokenCall{query: pullScope, authz: basic("alice", "wrong")}
	for range 2 {
		resp := bad.do(t, h)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password: status %d", resp.StatusCode)
		}
	}
	f.compares.Store(0)
	f.clock.Advance(15 * time.Second)
	calls := []tokenCall{
		{query: pullScope, authz: basic("alice", alicePass)},
		{method: "POST", form: url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {alicePass}}},
	}
	for _, c := range calls {
		resp := c.do(t, h)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s while blocked: status %d, want 429", c.method, resp.StatusCode)
		}
		if got := resp.Header.Get("Retry-After"); got != "45" {
			t.Errorf("Retry-After %q, want 45", got)
		}
		if got := errorCode(t, body); got != "TOOMANYREQUESTS" {
			t.Errorf("error code %q", got)
		}
	}
	if got := f.compares.Load(); got != 0 {
		t.Errorf("bcrypt comparisons while blocked = %d, want 0", got)
	}
	// Anonymous token requests carry no credentials and are not limited.
	resp := tokenCall{query: pullScope}.do(t, h)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("anonymous token while blocked: status %d", resp.StatusCode)
	}
}
