module plughost.test/goregistry

go 1.23.0
