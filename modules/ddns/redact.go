package ddns

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/internal/redact"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// redacted stands for a credential removed from a message.
const redacted = redact.Marker

// redactor removes credentials from the text of errors before they are
// recorded anywhere: the app's log (its logger's core passes every message
// and field through it), the records' last_error (GET /hearth/ddns, the
// dashboard, `caddy hearth status`) and Provision's errors. Metrics carry
// no error text. It removes
//
//   - the values of the provider's credential fields (any field named like
//     token, key, secret or password, at any depth, as written and with
//     placeholders such as {env.DDNS_TSIG_KEY} replaced, also URL-escaped,
//     and their beginnings where a message was cut short),
//     and the query values and passwords of URLs in the ip_sources: a
//     provider or a server may echo them in any form, such as a Cloudflare
//     error that quotes the token or a Provision error that prints it;
//   - what looks like a credential whatever its source: the query and the
//     user information of any URL, key=value pairs named like a credential,
//     Authorization headers and Bearer or Basic credentials.
type redactor struct {
	values []string // longest first
}

// secretField reports whether a config field holds a credential.
func secretField(name string) bool {
	n := strings.ToLower(strings.NewReplacer("-", "_", " ", "_").Replace(name))
	for _, word := range []string{"token", "secret", "password", "passwd", "credential", "apikey", "api_key", "private", "auth"} {
		if strings.Contains(n, word) {
			return true
		}
	}
	return n == "pass" || strings.HasSuffix(n, "key") // key, tsig_key, apikey; not key_name or key_alg
}

// newRedactor collects the credentials of the provider's config and of
// the ip_sources.
func newRedactor(provider json.RawMessage, sources []IPSource) *redactor {
	r := &redactor{}
	var cfg any
	if json.Unmarshal(provider, &cfg) == nil {
		r.collect(cfg, false)
	}
	for _, src := range sources {
		for _, s := range append([]string{src.URL}, src.Command...) {
			r.collectURL(s)
		}
	}
	slices.SortFunc(r.values, func(a, b string) int { return len(b) - len(a) })
	r.values = slices.Compact(r.values)
	return r
}

// collect walks a JSON value; secret says the value is under a credential
// field.
func (r *redactor) collect(v any, secret bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			r.collect(child, secret || secretField(k))
		}
	case []any:
		for _, child := range v {
			r.collect(child, secret)
		}
	case string:
		if secret {
			r.add(v)
		}
		r.collectURL(v)
	}
}

// collectURL adds the query values and the password of a URL.
func (r *redactor) collectURL(s string) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || u.Host == "" {
		return
	}
	if pass, ok := u.User.Password(); ok {
		r.add(pass)
	}
	for _, values := range u.Query() {
		for _, v := range values {
			r.add(v)
		}
	}
}

// add records a credential in every form a message may show it.
func (r *redactor) add(v string) {
	for _, s := range []string{v, caddy.NewReplacer().ReplaceAll(v, "")} {
		s = strings.TrimSpace(s)
		if len(s) < 4 { // too short to tell from ordinary words
			continue
		}
		quoted := strconv.Quote(s)
		r.values = append(r.values, s, url.QueryEscape(s), url.PathEscape(s), quoted[1:len(quoted)-1])
	}
}

// text removes credentials from s.
func (r *redactor) text(s string) string {
	s = redact.Text(s)
	if r == nil {
		return s
	}
	for _, v := range r.values {
		s = strings.ReplaceAll(s, v, redacted)
	}
	for _, v := range r.values { // cut short by a message's truncation
		for k := len(v) - 1; k >= 6; k-- {
			for _, cut := range []string{"…", "..."} {
				s = strings.ReplaceAll(s, v[:k]+cut, redacted+cut)
			}
			if strings.HasSuffix(s, v[:k]) {
				s = s[:len(s)-k] + redacted
			}
		}
	}
	return s
}

// err returns err with its text redacted; errors.Is and errors.As still
// see the original.
func (r *redactor) err(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*redactedError); ok {
		return err
	}
	return &redactedError{msg: r.text(err.Error()), orig: err}
}

type redactedError struct {
	msg  string
	orig error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.orig }

// logger is base with every message and field redacted.
func (r *redactor) logger(base *zap.Logger) *zap.Logger {
	return base.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return &redactingCore{Core: c, r: r} }))
}

// redactingCore redacts entries before its Core writes them.
type redactingCore struct {
	zapcore.Core
	r *redactor
}

func (c *redactingCore) With(fields []zapcore.Field) zapcore.Core {
	return &redactingCore{Core: c.Core.With(c.fields(fields)), r: c.r}
}

// Check asks the wrapped core which of its outputs take the entry (Caddy's
// is a tee of its logs, each with its own level and sampling, which only
// their own Check applies), with its message redacted, and has those
// write it with its fields redacted. Adding itself instead, as a core that
// writes through the tee, wrote every entry to every log.
func (c *redactingCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	e.Message = c.r.text(e.Message)
	taken := c.Core.Check(e, nil)
	if taken == nil {
		return ce
	}
	return ce.AddCore(e, &redactedWrite{Core: c.Core, taken: taken, r: c})
}

// Write writes an entry through the wrapped core redacted, for a caller
// that writes without Check (zapcore's own helpers do not).
func (c *redactingCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	e.Message = c.r.text(e.Message)
	return c.Core.Write(e, c.fields(fields))
}

// redactedWrite writes one checked entry to the outputs that took it,
// its fields redacted: a core of a single use.
type redactedWrite struct {
	zapcore.Core // the wrapped one (for Enabled, With: not called on a one-entry core)
	taken        *zapcore.CheckedEntry
	r            *redactingCore
}

func (w *redactedWrite) Write(_ zapcore.Entry, fields []zapcore.Field) error {
	w.taken.Write(w.r.fields(fields)...)
	return nil
}

func (w *redactedWrite) Sync() error { return w.r.Sync() }

// fields redacts strings, errors and anything else that prints as text.
func (c *redactingCore) fields(in []zapcore.Field) []zapcore.Field {
	out := make([]zapcore.Field, len(in))
	for i, f := range in {
		switch f.Type {
		case zapcore.StringType:
			f.String = c.r.text(f.String)
		case zapcore.ErrorType:
			if err, ok := f.Interface.(error); ok {
				f = zap.NamedError(f.Key, c.r.err(err))
			}
		case zapcore.StringerType, zapcore.ReflectType, zapcore.ByteStringType, zapcore.BinaryType, zapcore.ObjectMarshalerType, zapcore.ArrayMarshalerType:
			enc := zapcore.NewMapObjectEncoder()
			f.AddTo(enc)
			b, _ := json.Marshal(enc.Fields[f.Key])
			f = zap.String(f.Key, c.r.text(strings.Trim(string(b), `"`)))
		}
		out[i] = f
	}
	return out
}

// emptyCredential finds a credential setting of the provider (a field
// named like token, key, secret or password) that is, or resolves to,
// nothing: `key {env.DDNS_TSIG_KEY}` with the variable unset would
// otherwise sign updates with an empty key and fail later with a vaguer
// error, or not at all.
func emptyCredential(provider json.RawMessage) error {
	var cfg any
	if json.Unmarshal(provider, &cfg) != nil {
		return nil
	}
	return findEmptyCredential(cfg, "")
}

func findEmptyCredential(v any, field string) error {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if err := findEmptyCredential(v[k], k); err != nil {
				return err
			}
		}
	case string:
		if field == "" || !secretField(field) {
			return nil
		}
		if strings.TrimSpace(caddy.NewReplacer().ReplaceAll(v, "")) != "" {
			return nil
		}
		if vars := envPlaceholders.FindAllStringSubmatch(v, -1); len(vars) > 0 {
			var names []string
			for _, m := range vars {
				names = append(names, m[1])
			}
			return fmt.Errorf("ddns: the provider's %s is empty: it comes from the environment variable %s, which is not set in Caddy's environment; set it (with the systemd unit, in its EnvironmentFile) or write the value in the config",
				field, strings.Join(names, ", "))
		}
		return fmt.Errorf("ddns: the provider's %s is empty; set it", field)
	}
	return nil
}

// envPlaceholders matches {env.NAME} and {$NAME} placeholders.
var envPlaceholders = regexp.MustCompile(`\{(?:env\.|\$)([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}`)
