module harness/go

go 1.25

require (
	codeberg.org/sbinet/npyio v0.14.0
	github.com/galeone/tensorflow/tensorflow/go v0.0.0-20221023090153-6b7fa0680c3e
	github.com/galeone/tfgo v0.0.0-20230715013254-16113111dc99
	github.com/yalue/onnxruntime_go v1.27.0
	google.golang.org/protobuf v1.28.1
)

require (
	github.com/nlpodyssey/gopickle v0.3.0 // indirect
	golang.org/x/text v0.34.0 // indirect
	gonum.org/v1/gonum v0.17.0 // indirect
)
