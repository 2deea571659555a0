# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_jwkd_global_optspecs
    string join \n h/help V/version
end

function __fish_jwkd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_jwkd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_jwkd_using_subcommand
    set -l cmd (__fish_jwkd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c jwkd -n "__fish_jwkd_needs_command" -s h -l help -d 'Print help'
complete -c jwkd -n "__fish_jwkd_needs_command" -s V -l version -d 'Print version'
complete -c jwkd -n "__fish_jwkd_needs_command" -f -a "serve" -d 'Run the daemon in the foreground'
complete -c jwkd -n "__fish_jwkd_needs_command" -f -a "check-config" -d 'Validate the config and print the effective timeline'
complete -c jwkd -n "__fish_jwkd_needs_command" -f -a "keys" -d 'List keys with their state and times'
complete -c jwkd -n "__fish_jwkd_needs_command" -f -a "rotate" -d 'Rotate now: the next key becomes current as soon as it is safe (once signing, it gets a successor); while a rotation is pending, says so and changes nothing'
complete -c jwkd -n "__fish_jwkd_needs_command" -f -a "revoke" -d 'Emergency: withdraw a key from the JWKS at once'
complete -c jwkd -n "__fish_jwkd_needs_command" -f -a "repair" -d 'Rewrite only what makes a stored keyset fail to load, after a backup'
complete -c jwkd -n "__fish_jwkd_needs_command" -f -a "hash-secret" -d 'Read a client secret on stdin and print the hash to put in the config; with --generate, make a new random secret and print it and its hash'
complete -c jwkd -n "__fish_jwkd_needs_command" -f -a "verify" -d 'Verify a token against a JWKS with jwkd-client; print its claims as JSON'
complete -c jwkd -n "__fish_jwkd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c jwkd -n "__fish_jwkd_using_subcommand serve" -l config -d 'Config file; defaults to $JWKD_CONFIG, then /etc/jwkd/jwkd.toml' -r -F
complete -c jwkd -n "__fish_jwkd_using_subcommand serve" -s h -l help -d 'Print help'
complete -c jwkd -n "__fish_jwkd_using_subcommand check-config" -l config -d 'Config file; defaults to $JWKD_CONFIG, then /etc/jwkd/jwkd.toml' -r -F
complete -c jwkd -n "__fish_jwkd_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c jwkd -n "__fish_jwkd_using_subcommand keys" -l config -d 'Config file; defaults to $JWKD_CONFIG, then /etc/jwkd/jwkd.toml' -r -F
complete -c jwkd -n "__fish_jwkd_using_subcommand keys" -l issuer -d 'The issuer, by its `[[issuers]]` name; default: the issuer of the top-level sections (`default`)' -r
complete -c jwkd -n "__fish_jwkd_using_subcommand keys" -l json -d 'Print JSON instead of a table'
complete -c jwkd -n "__fish_jwkd_using_subcommand keys" -s h -l help -d 'Print help'
complete -c jwkd -n "__fish_jwkd_using_subcommand rotate" -l config -d 'Config file; defaults to $JWKD_CONFIG, then /etc/jwkd/jwkd.toml' -r -F
complete -c jwkd -n "__fish_jwkd_using_subcommand rotate" -l issuer -d 'The issuer, by its `[[issuers]]` name; default: the issuer of the top-level sections (`default`)' -r
complete -c jwkd -n "__fish_jwkd_using_subcommand rotate" -s h -l help -d 'Print help'
complete -c jwkd -n "__fish_jwkd_using_subcommand revoke" -l config -d 'Config file; defaults to $JWKD_CONFIG, then /etc/jwkd/jwkd.toml' -r -F
complete -c jwkd -n "__fish_jwkd_using_subcommand revoke" -l issuer -d 'The issuer, by its `[[issuers]]` name; default: the issuer of the top-level sections (`default`)' -r
complete -c jwkd -n "__fish_jwkd_using_subcommand revoke" -s h -l help -d 'Print help'
complete -c jwkd -n "__fish_jwkd_using_subcommand repair" -l config -d 'Config file; defaults to $JWKD_CONFIG, then /etc/jwkd/jwkd.toml' -r -F
complete -c jwkd -n "__fish_jwkd_using_subcommand repair" -l issuer -d 'The issuer, by its `[[issuers]]` name; default: the issuer of the top-level sections (`default`)' -r
complete -c jwkd -n "__fish_jwkd_using_subcommand repair" -l dry-run -d 'Say what would change; write nothing'
complete -c jwkd -n "__fish_jwkd_using_subcommand repair" -s h -l help -d 'Print help'
complete -c jwkd -n "__fish_jwkd_using_subcommand hash-secret" -l generate -d 'Make a new 256-bit secret (base64url: safe in Basic and form bodies) instead of reading one: prints `secret: ...` and `secret_hash: ...`'
complete -c jwkd -n "__fish_jwkd_using_subcommand hash-secret" -s h -l help -d 'Print help'
complete -c jwkd -n "__fish_jwkd_using_subcommand verify" -l jwks -d 'The JWK Set URL (https, or http on loopback); not with `--issuer ISS=URL`' -r
complete -c jwkd -n "__fish_jwkd_using_subcommand verify" -l issuer -d 'The issuer the token must have (exact `iss`), with --jwks; or, repeated, `ISS=URL`: each issuer with its own JWK Set, the token checked only against the keys of the issuer its `iss` names' -r
complete -c jwkd -n "__fish_jwkd_using_subcommand verify" -l audience -d 'An audience the token\'s `aud` must contain' -r
complete -c jwkd -n "__fish_jwkd_using_subcommand verify" -l algorithm -d 'Allow only these algorithms (repeatable); default: every one jwkd supports' -r
complete -c jwkd -n "__fish_jwkd_using_subcommand verify" -s h -l help -d 'Print help'
complete -c jwkd -n "__fish_jwkd_using_subcommand help; and not __fish_seen_subcommand_from serve check-config keys rotate revoke repair hash-secret verify help" -f -a "serve" -d 'Run the daemon in the foreground'
complete -c jwkd -n "__fish_jwkd_using_subcommand help; and not __fish_seen_subcommand_from serve check-config keys rotate revoke repair hash-secret verify help" -f -a "check-config" -d 'Validate the config and print the effective timeline'
complete -c jwkd -n "__fish_jwkd_using_subcommand help; and not __fish_seen_subcommand_from serve check-config keys rotate revoke repair hash-secret verify help" -f -a "keys" -d 'List keys with their state and times'
complete -c jwkd -n "__fish_jwkd_using_subcommand help; and not __fish_seen_subcommand_from serve check-config keys rotate revoke repair hash-secret verify help" -f -a "rotate" -d 'Rotate now: the next key becomes current as soon as it is safe (once signing, it gets a successor); while a rotation is pending, says so and changes nothing'
complete -c jwkd -n "__fish_jwkd_using_subcommand help; and not __fish_seen_subcommand_from serve check-config keys rotate revoke repair hash-secret verify help" -f -a "revoke" -d 'Emergency: withdraw a key from the JWKS at once'
complete -c jwkd -n "__fish_jwkd_using_subcommand help; and not __fish_seen_subcommand_from serve check-config keys rotate revoke repair hash-secret verify help" -f -a "repair" -d 'Rewrite only what makes a stored keyset fail to load, after a backup'
complete -c jwkd -n "__fish_jwkd_using_subcommand help; and not __fish_seen_subcommand_from serve check-config keys rotate revoke repair hash-secret verify help" -f -a "hash-secret" -d 'Read a client secret on stdin and print the hash to put in the config; with --generate, make a new random secret and print it and its hash'
complete -c jwkd -n "__fish_jwkd_using_subcommand help; and not __fish_seen_subcommand_from serve check-config keys rotate revoke repair hash-secret verify help" -f -a "verify" -d 'Verify a token against a JWKS with jwkd-client; print its claims as JSON'
complete -c jwkd -n "__fish_jwkd_using_subcommand help; and not __fish_seen_subcommand_from serve check-config keys rotate revoke repair hash-secret verify help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
