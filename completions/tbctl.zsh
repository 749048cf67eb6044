
#compdef tbctl

_tbctl_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _TBCTL_COMPLETE=complete_zsh tbctl)
}

compdef _tbctl_completion tbctl

