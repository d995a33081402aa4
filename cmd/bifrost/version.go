package main

import "runtime/debug"

// version names the build: the module version when built from a tagged
// module, else the VCS revision (and "+dirty" for uncommitted changes), as
// the Go toolchain recorded them.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "bifrost (unknown build)"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return "bifrost " + v
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return "bifrost (devel)"
	}
	return "bifrost " + rev + dirty
}
