# bash completion for iptkit(8); installed as share/bash-completion/completions/iptkit.
# The commands and options come from `iptkit --help` and `iptkit COMMAND --help` of the iptkit being completed,
# so the completion cannot drift from the program.

# The commands `iptkit --help` lists ("info", ..., "chain"), one a line.
_iptkit_commands() {
  "$1" --help 2>/dev/null | awk '/^Commands:/ { f = 1; next } f && /^$/ { exit } f { print $1 }' | sort -u
}

# The option names of one help section: _iptkit_flags IPTKIT SECTION [COMMAND [SUBCOMMAND]].
_iptkit_flags() {
  local bin=$1 section=$2
  shift 2
  "$bin" "$@" --help 2>/dev/null | awk -v s="$section" '
    index($0, s) == 1 { f = 1; next }
    f && /^$/ { exit }
    f && /^  -/ {
      label = substr($0, 3); sub(/  .*/, "", label)
      n = split(label, parts, ", ")
      for (i = 1; i <= n; i++) { split(parts[i], w, " "); print w[1] }
    }'
}

_iptkit() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]} bin=${COMP_WORDS[0]}
  COMPREPLY=()
  case $prev in
    -t | --table)
      COMPREPLY=($(compgen -W "filter nat mangle raw security" -- "$cur"))
      return
      ;;
    --backend)
      COMPREPLY=($(compgen -W "auto native native-legacy nft legacy fake" -- "$cur"))
      return
      ;;
    --netns)
      COMPREPLY=($(compgen -W "$(ip netns list 2>/dev/null | cut -d' ' -f1)" -- "$cur"))
      return
      ;;
    --wait | --owner | --ttl)
      return
      ;;
  esac

  # The command (and the chain subcommand) typed so far, skipping options and their values.
  local i w cmd="" sub="" positionals=0
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=${COMP_WORDS[i]}
    case $w in
      -t | --table | --backend | --netns | --wait | --owner | --ttl)
        ((i++))
        continue
        ;;
      -*) continue ;;
    esac
    if [[ -z $cmd ]]; then
      cmd=$w
    elif [[ ($cmd == chain || $cmd == set) && -z $sub ]]; then
      sub=$w
    else
      ((positionals++))
    fi
  done

  if [[ -z $cmd ]]; then
    if [[ $cur == -* ]]; then
      COMPREPLY=($(compgen -W "$(_iptkit_flags "$bin" "Global options")" -- "$cur"))
    else
      COMPREPLY=($(compgen -W "$(_iptkit_commands "$bin")" -- "$cur"))
    fi
    return
  fi
  if [[ $cmd == chain && -z $sub ]]; then
    COMPREPLY=($(compgen -W "create delete rename flush zero policy" -- "$cur"))
    return
  fi
  if [[ $cmd == set && -z $sub ]]; then
    COMPREPLY=($(compgen -W "list create add del test load sync flush swap rename destroy" -- "$cur"))
    return
  fi
  # After CHAIN a rule command's words are the RULESPEC (iptables syntax): nothing of iptkit's to complete.
  case $cmd in
    check | append | insert | delete | replace)
      ((positionals > 0)) && return
      ;;
  esac
  if [[ $cur == -* ]]; then
    local flags
    flags=$({ _iptkit_flags "$bin" "Options:" $cmd $sub; _iptkit_flags "$bin" "Global options"; } | sort -u)
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    return
  fi
  case $cmd in
    restore | plan | apply | txn)
      COMPREPLY=($(compgen -f -- "$cur"))
      ;;
    set)
      # The set names of the namespace iptkit lists; a FILE after load/sync NAME.
      if [[ ($sub == load || $sub == sync) && $positionals -ge 1 ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
      elif [[ $sub == create && $positionals -ge 1 ]]; then
        COMPREPLY=($(compgen -W "hash:ip hash:net hash:ip,port hash:net,port hash:ip,port,ip hash:ip,port,net hash:net,iface bitmap:ip bitmap:ip,mac bitmap:port list:set family hashsize maxelem timeout counters comment skbinfo netmask range size" -- "$cur"))
      else
        COMPREPLY=($(compgen -W "$("$bin" set list --terse 2>/dev/null | sed -n 's/^Name: //p')" -- "$cur"))
      fi
      ;;
    list | save)
      COMPREPLY=($(compgen -W "filter nat mangle raw security INPUT FORWARD OUTPUT PREROUTING POSTROUTING" -- "$cur"))
      ;;
    chain)
      if [[ $sub == policy && $positionals -ge 1 ]]; then
        COMPREPLY=($(compgen -W "ACCEPT DROP" -- "$cur"))
      else
        COMPREPLY=($(compgen -W "INPUT FORWARD OUTPUT PREROUTING POSTROUTING" -- "$cur"))
      fi
      ;;
    *)
      COMPREPLY=($(compgen -W "INPUT FORWARD OUTPUT PREROUTING POSTROUTING" -- "$cur"))
      ;;
  esac
}

complete -F _iptkit iptkit
