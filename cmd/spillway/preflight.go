package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/admin"
	"github.com/spillway/spillway/proxy/store"
)

// preflight is what run checks of a config at start beyond Validate and proxy.CheckTLSFiles
// (which the Reloader runs on every config): the admin tokens, the access log's file and
// the state file.
// validate runs the same check, so that what one refuses the other refuses, with the same
// file:line:col message; it opens no socket and leaves no file behind. tokenEnv is
// SPILLWAY_ADMIN_TOKEN; tokens, when not nil, are used instead of token_file and tokenEnv
// (the demo).
func preflight(tokenEnv string, tokens admin.Tokens) configs.Check {
	return func(cfg *configs.Config) error {
		errs := append(checkAdmin(cfg, tokenEnv, tokens), checkAccessLog(cfg)...)
		errs = append(errs, checkStateFile(cfg)...)
		errs = append(errs, checkCluster(cfg)...) // cluster.go
		if len(errs) > 0 {
			return errs
		}
		return nil
	}
}

// checkAdmin reads the admin tokens as run will, and refuses an admin API off loopback
// that no token protects.
func checkAdmin(cfg *configs.Config, tokenEnv string, tokens admin.Tokens) configs.Errors {
	a := cfg.Admin
	if a.Listen == "" {
		return nil
	}
	if tokens == nil {
		var err error
		if _, err = admin.LoadTokens(a.TokenFile, ""); err != nil {
			return configs.Errors{cfg.Errorf("admin.token_file", "%s%v", written(cfg, "admin.token_file", a.TokenFile), err)}
		}
		if tokens, err = admin.LoadTokens(a.TokenFile, tokenEnv); err != nil {
			return configs.Errors{cfg.Errorf("admin", "%v", err)} // the environment's token
		}
	}
	if !admin.IsLoopback(a.Listen) && len(tokens) == 0 {
		return configs.Errors{cfg.Errorf("admin.listen", "%s is not a loopback address: set admin.token_file or SPILLWAY_ADMIN_TOKEN, so that the admin API needs a token", configs.Quote(a.Listen))}
	}
	return nil
}

// checkAccessLog refuses an access log file that run could not open for appending: one
// that exists but cannot be written, or one in a directory that is missing or read-only.
// It leaves nothing behind: a file that does not exist yet is tried as a temporary file in
// its directory, removed at once.
func checkAccessLog(cfg *configs.Config) configs.Errors {
	al := cfg.AccessLog
	if al == nil || al.Output == "" || al.Output == "stdout" || al.Output == "stderr" {
		return nil
	}
	err := writable(al.Output)
	if err == nil {
		return nil
	}
	return configs.Errors{cfg.Errorf("access_log.output", "%scannot open for appending: %v", written(cfg, "access_log.output", al.Output), err)}
}

// checkStateFile refuses a state file that run could not use: one that is corrupt or
// unreadable (run would not start without the drains it holds), or in a directory where it
// cannot be replaced atomically (a temporary file beside it, renamed over it).
func checkStateFile(cfg *configs.Config) configs.Errors {
	st := cfg.State
	if st == nil || st.File == "" {
		return nil
	}
	err := store.CheckFile(st.File)
	target := st.File
	if err == nil {
		target, err = store.Target(st.File)
	}
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(filepath.Dir(target), ".spillway-check-*"); err == nil {
			name := f.Name()
			f.Close()
			err = os.Remove(name)
		} else {
			err = fmt.Errorf("cannot write beside %s: %w", target, unwrapPath(err))
		}
	}
	if err != nil {
		return configs.Errors{cfg.Errorf("state.file", "%s%v", written(cfg, "state.file", st.File), err)}
	}
	return nil
}

func writable(path string) error {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return fmt.Errorf("%s is a directory", path)
	case err == nil:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		return f.Close()
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".spillway-check-*")
	if err != nil {
		return fmt.Errorf("cannot create %s: %w", path, unwrapPath(err))
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// unwrapPath drops the temporary file's name from err, which would only confuse.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// written is "what the user wrote (the path it resolved to): " when the file gave a
// relative path that Load made absolute, else "" (the path in the error says it all).
func written(cfg *configs.Config, path, resolved string) string {
	w := cfg.Written(path)
	if w == "" || w == resolved {
		return ""
	}
	return fmt.Sprintf("%s is %s, relative to the config file: ", configs.Quote(w), configs.Quote(resolved))
}
