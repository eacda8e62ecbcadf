module aliasop.local/tools/lua-health

go 1.23

require github.com/yuin/gopher-lua v1.1.2
