package supervisor

import (
	"fmt"
	"strconv"

	"github.com/hearth-dev/hearth/modules/internal/keeper"
)

// DefaultUmask is the file mode creation mask of every child Hearth starts
// unless configured (`umask`): files the app creates are readable by its
// group and by no one else (0640, directories 0750). Caddy's own 0022
// would make everything an app writes (its SQLite database, uploads,
// logs) readable by every local account. The group keeps read access so
// that a Caddy running under another account in the app's group can still
// serve what the app writes (collectstatic output, uploads); Caddy running
// as the app's own account, or as root, reads it anyway.
const DefaultUmask = keeper.DefaultUmask

// ParseUmask reads an octal umask of up to four digits ("0027", "027",
// "77"); "" is DefaultUmask. A mask that lets others write the files the
// app creates (no 2 in the last digit, such as 0000) is refused.
func ParseUmask(s string) (uint32, error) {
	if s == "" {
		return DefaultUmask, nil
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || len(s) > 4 || v > 0o777 {
		return 0, fmt.Errorf("umask %q is not an octal file mode mask like 0027", s)
	}
	if v&0o002 == 0 {
		return 0, fmt.Errorf("umask %s would let every account on the machine write the files the app creates; use 0027 (the default), 0022 or 0002", s)
	}
	return uint32(v), nil
}

// FormatUmask writes a mask as four octal digits ("0027").
func FormatUmask(mask uint32) string { return fmt.Sprintf("%04o", mask) }

// The umask of a child is set by the keeper (internal/keeper), which forks every
// child from a thread of its own and changes nothing of Caddy's: the
// umask belongs to a process, so setting it in Caddy around a fork would
// change it for every file Caddy creates meanwhile.

func init() {
	// Caddy's descriptors inherited without close-on-exec reach no child
	// (the keeper does the same for itself)
	keeper.MarkInheritedCloseOnExec()
}
