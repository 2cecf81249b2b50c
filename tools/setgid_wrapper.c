/*
 * setgid_wrapper - run a pfx command with the privileges of setgid_group
 *
 * A Python program cannot be installed set-group-ID: the kernel ignores
 * the mode bits of scripts.  postdrop and postqueue need the group
 * privileges of setgid_group (postdrop) to write the maildrop directory
 * and to reach the public/ sockets, so "make install" compiles this
 * program once per command, installs it as $(PREFIX)/sbin/postdrop and
 * $(PREFIX)/sbin/postqueue with mode 2755 and group postdrop, and this
 * program executes the installed Python interpreter on the command's
 * launcher.
 *
 * As Postfix's set-gid programs do, it trusts nothing from the caller's
 * environment: the environment is replaced by the variables that
 * Postfix's import_environment keeps by default and a fixed PATH, and
 * the interpreter runs isolated (-I: no PYTHON* variables, no user site
 * directory, no script directory on the module path).  The command line
 * is passed on as given; the command itself checks it.
 *
 * Compile-time settings: PFX_PYTHON (the interpreter) and PFX_SCRIPT (the
 * launcher that imports the command), both absolute paths.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if !defined(PFX_PYTHON) || !defined(PFX_SCRIPT)
#error "define PFX_PYTHON and PFX_SCRIPT"
#endif

extern char **environ;

/* The caller's variables that survive, as import_environment's default. */
static const char *const keep[] = {
    "MAIL_CONFIG", "MAIL_DEBUG", "MAIL_LOGTAG", "TZ", "LANG", 0,
};

#define SAFE_PATH	"PATH=/usr/bin:/bin"
#define MAX_VALUE	4096		/* longer values are dropped */

int     main(int argc, char **argv)
{
    const char *clean[sizeof(keep) / sizeof(keep[0]) + 1];
    int     nclean = 0;
    const char *const *name;
    char  **ep;
    char  **args;
    int     i;

    /* Keep the first instance of each listed name; drop everything else. */
    for (name = keep; *name; name++) {
	size_t  len = strlen(*name);

	for (ep = environ; ep && *ep; ep++) {
	    if (strncmp(*ep, *name, len) == 0 && (*ep)[len] == '='
		&& strlen(*ep + len + 1) <= MAX_VALUE) {
		clean[nclean++] = *ep;
		break;
	    }
	}
    }
    clean[nclean++] = SAFE_PATH;
    clean[nclean] = 0;

    if ((args = calloc((size_t) argc + 6, sizeof(*args))) == 0) {
	fputs("postdrop: out of memory\n", stderr);
	return (75);
    }
    i = 0;
    args[i++] = (char *) PFX_PYTHON;
    args[i++] = (char *) "-I";
    args[i++] = (char *) "-E";
    args[i++] = (char *) "-s";
    args[i++] = (char *) PFX_SCRIPT;
    for (int n = 1; n < argc; n++)
	args[i++] = argv[n];
    args[i] = 0;

    execve(PFX_PYTHON, args, (char **) clean);
    fprintf(stderr, "%s: execute %s: %s\n",
	    argc > 0 && argv[0] ? argv[0] : "setgid_wrapper",
	    PFX_PYTHON, strerror(errno));
    return (75);
}
