-- wrk script: POST the float32 body file given after "--" to the URL.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
function init(args)
    local file = assert(io.open(args[1], "rb"))
    wrk.body = file:read("*a")
    file:close()
end
