package redact

import "testing"

func TestText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`could not translate host name "postgres://app:s3cret@db/x" to address`, `could not translate host name "postgres://[redacted]@db/x" to address`},
		{"GET https://ip.example/?token=abc123 failed", "GET https://ip.example/?[redacted] failed"},
		{"dsn host=db password=hunter2 user=app", "dsn host=db password=[redacted] user=app"},
		{"Authorization: Bearer eyJhbGciOi.x", "Authorization: [redacted]"},
		{"sent Bearer abcdefgh1234 to the API", "sent Bearer [redacted] to the API"},
		{"Basic authentication failed", "Basic authentication failed"},
		{"no secret here: https://example.net/path", "no secret here: https://example.net/path"},
		{`dsn "host=db password='hunter 2' user=app"`, `dsn "host=db password='[redacted]' user=app"`},
		{`{'ENGINE': 'x', 'PASSWORD': 'hunter2', 'HOST': 'db'}`, `{'ENGINE': 'x', 'PASSWORD': '[redacted]', 'HOST': 'db'}`},
		{`{"api_key": "abc", "name": "n"}`, `{"api_key": "[redacted]", "name": "n"}`},
		{`{"token":""}`, `{"token":"[redacted]"}`},
	} {
		if got := Text(tc.in); got != tc.want {
			t.Errorf("Text(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
	}
}
